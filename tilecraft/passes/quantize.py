"""The quantization pass of `tilecraft.compile(model, quantize=scheme)`: delegates to tilecraft.quant.

`scheme` may carry an int4 group size as "int4_weight_only:64"; without one, int4 takes the largest of 128/64/32
that divides every Linear's in_features (so small models work with the plain scheme name)."""
from __future__ import annotations

import torch
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


def fold_dequant_matmul(graph):
    """Rewrite `x @ (q.to(dt) * s).t()` (q an int8 [N, K] weight, s a per-row scale [N, 1] or [N]) written as
    plain torch ops into one `wq_linear_int8` node, whose kernel dequantizes in its weight loads: the float
    weight is never written, and decode-sized x gets the GEMV kernel. The scale is cast to float32 once (a
    step on parameters alone, which the runtime caches)."""
    from ..ir import Value

    users = graph.users()

    def single(v):
        return isinstance(v, Value) and len(users.get(v, [])) == 1 and not any(v is o for o in graph.outputs)

    for mm in list(graph.nodes):
        if mm.op != "mm" or not all(isinstance(v, Value) for v in mm.inputs[:2]):
            continue
        x, b = mm.inputs[:2]
        t = b.producer
        if t is None or t.op != "permute" or list(t.attrs.get("dims", ())) != [1, 0] or not single(b):
            continue
        d = t.inputs[0]
        mul = d.producer
        if mul is None or mul.op != "mul" or not single(d) or not all(isinstance(v, Value) for v in mul.inputs):
            continue
        for c, s in (mul.inputs, mul.inputs[::-1]):
            cast = c.producer
            if cast is not None and cast.op == "cast" and cast.inputs[0].type.dtype == torch.int8:
                break
        else:
            continue
        q = cast.inputs[0]
        N, K = q.type.shape if q.type.rank == 2 else (None, None)
        dt = x.type.dtype
        if N is None or c.type.dtype != dt or d.type.dtype != dt or s.type.shape not in ((N, 1), (N,)) \
                or not dt.is_floating_point or x.type.rank != 2 or x.type.shape[1] != K:
            continue
        i = graph.nodes.index(mm)
        new = []
        if s.type.rank == 2:
            new.append(graph.make_node("view", [s], {"size": [N]}))
            s = new[-1].out
        new.append(graph.make_node("cast", [s], {"dtype": torch.float32}))
        new.append(graph.make_node("wq_linear_int8", [x, q, new[-1].out, None], {}, source=mm.source))
        graph.nodes[i:i] = new
        graph.replace_all_uses(mm.out, new[-1].out)
        graph.nodes.remove(mm)
        users = graph.users()
    return graph
