"""The quantization pass of `tilecraft.compile(model, quantize=scheme)`: delegates to tilecraft.quant."""
from __future__ import annotations

import torch.nn as nn


def quantize(model: nn.Module, scheme: str, **kw) -> nn.Module:
    """Rewrite the model's nn.Linear layers into quantized linears (see tilecraft.quant.quantize)."""
    from ..quant import quantize as _quantize

    return _quantize(model, scheme, **kw)
