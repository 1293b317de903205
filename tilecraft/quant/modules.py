"""nn.Modules that replace nn.Linear: quantized weights as buffers, forward = one tilecraft custom op."""
from __future__ import annotations

import torch
import torch.nn as nn

from .formats import (QuantError, QuantizedWeight, from_awq, from_gptq, int4_from_packed, quantize_weight)
from .ops import fp8_linear, wq_linear_int4, wq_linear_int8


class QuantizedLinear(nn.Module):
    """A Linear whose weight is stored quantized (see tilecraft.quant.formats for the layouts)."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None, act_per_row: bool = True):
        super().__init__()
        self.scheme, self.group_size, self.act_per_row = qw.scheme, qw.group_size, act_per_row
        self.out_features, self.in_features = qw.shape
        self.register_buffer("qweight", qw.qweight)
        self.register_buffer("scales", qw.scales)
        self.register_buffer("zeros", qw.zeros)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_float(cls, linear: nn.Linear, scheme: str, group_size: int = 128, per_row: bool = True):
        qw = quantize_weight(linear.weight, scheme, group_size, per_row)
        return cls(qw, linear.bias, per_row)

    @classmethod
    def from_quantized(cls, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                       bias: torch.Tensor | None = None, layout: str = "tilecraft") -> "QuantizedLinear":
        """Build an int4 linear from checkpoint tensors. layout: "tilecraft" (uint8 [N, K//2], scales/zeros
        [N, K//G]), "gptq" (int32 qweight [K//8, N], qzeros [K//G, N//8], scales [K//G, N]) or "awq"."""
        if layout == "tilecraft":
            qw = int4_from_packed(qweight, scales, zeros, group_size)
        elif layout == "gptq":
            qw = from_gptq(qweight, zeros, scales, group_size)
        elif layout == "awq":
            qw = from_awq(qweight, zeros, scales, group_size)
        else:
            raise QuantError(f"unknown int4 checkpoint layout {layout!r}; known: tilecraft, gptq, awq")
        return cls(qw, bias)

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.scheme, self.qweight, self.scales, self.zeros, self.group_size,
                               (self.out_features, self.in_features))

    def dequantized_weight(self, dtype=torch.float32) -> torch.Tensor:
        return self.quantized_weight().dequantize(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.scheme == "int8_weight_only":
            return wq_linear_int8(x, self.qweight, self.scales, bias)
        if self.scheme == "int4_weight_only":
            return wq_linear_int4(x, self.qweight, self.scales, self.zeros, bias, self.group_size)
        return fp8_linear(x, self.qweight, self.scales, bias, self.act_per_row)

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.group_size else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}{g}"
