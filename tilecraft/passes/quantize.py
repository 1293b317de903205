"""The quantization pass of `tilecraft.compile(model, quantize=scheme)`: delegates to tilecraft.quant.

`scheme` may carry an int4 group size as "int4_weight_only:64"; without one, int4 takes the largest of 128/64/32
that divides every Linear's in_features (so small models work with the plain scheme name)."""
from __future__ import annotations

import torch.nn as nn


def quantize(model: nn.Module, scheme: str, **kw) -> nn.Module:
    """Rewrite the model's nn.Linear layers into quantized linears (see tilecraft.quant.quantize)."""
    from ..quant import quantize as _quantize
    from ..quant.formats import INT4_GROUP_SIZES, QuantError

    name, _, group = scheme.partition(":")
    if group:
        if not group.isdigit():
            raise QuantError(f"quantize={scheme!r}: the group size after ':' must be an integer")
        kw.setdefault("group_size", int(group))
    elif name == "int4_weight_only" and "group_size" not in kw:
        ks = [m.in_features for m in model.modules() if isinstance(m, nn.Linear)]
        fits = [g for g in sorted(INT4_GROUP_SIZES, reverse=True) if all(k % g == 0 for k in ks)]
        kw["group_size"] = fits[0] if fits else 128  # none fits: quantize() names the layer that does not
    return _quantize(model, name, **kw)
