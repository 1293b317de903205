"""tilecraft: a PyTorch compiler that emits fused, tuned Triton kernels."""
import os as _os

if not _os.environ.get("TRITON_INTERPRET"):
    try:
        import torch as _torch

        if not _torch.cuda.is_available():  # no GPU: Triton kernels run through its interpreter
            _os.environ["TRITON_INTERPRET"] = "1"
    except ImportError:  # pragma: no cover
        pass

from .compiler import CompiledModel, Options, compile, explain  # noqa: E402
from .quant import quantize, quantize_  # noqa: E402  (also registers the quantized-linear ops)

__version__ = "0.1.0"
__all__ = ["compile", "explain", "quantize", "quantize_", "Options", "CompiledModel", "__version__"]
