"""Weight quantization: formats and packing (formats), Triton kernels with fused dequantization (kernels),
custom ops + IR ops (ops), quantized Linear modules (modules), `quantize` and its accuracy report."""
from . import ops  # noqa: F401  registers the custom ops and IR ops
from .formats import (SCHEMES, QuantError, QuantizedWeight, dequantize, from_awq, from_gptq, int4_from_packed,
                      pack_int4, quantize_weight, unpack_int4)
from .kernels import config_space, default_config, make_kernel, run_quantized_linear
from .modules import QuantizedLinear
from .quantize import quantize, quantize_
from .report import QuantReport

__all__ = ["SCHEMES", "QuantError", "QuantizedWeight", "dequantize", "from_awq", "from_gptq", "int4_from_packed",
           "pack_int4", "unpack_int4", "quantize_weight", "make_kernel", "run_quantized_linear", "config_space",
           "default_config", "QuantizedLinear", "quantize", "quantize_", "QuantReport"]
