"""The quantization step of `tilecraft.compile(model, quantize=scheme)` (delegates to tilecraft.quant), and
`fold_dequant_matmul`, the pass that turns a dequantize-then-matmul written in torch into one quantized linear.

`scheme` may carry an int4 group size as "int4_weight_only:64"; without one, int4 takes the largest of 128/64/32
that divides every Linear's in_features (so small models work with the plain scheme name)."""
from __future__ import annotations

import torch
import torch.nn as nn


def quantize(model: nn.Module, scheme: str, **kw) -> nn.Module:
    """A quantized copy of the model for compile (the user's model is left unchanged; see tilecraft.quantize)."""
    from ..quant import quantize as _quantize

    return _quantize(model, scheme, **kw)


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
