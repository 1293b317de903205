"""`fuse_attention`: attention written out as matmuls becomes one `sdpa` node.

Two forms reach the IR as `bmm → (scale, mask) → softmax → bmm`: HF's "eager" attention (`q @ k.T / sqrt(d)
+ mask`, softmax, `@ v`), and torch's own math fallback of scaled_dot_product_attention (q and k each scaled by
sqrt(scale), a "safe" softmax that zeroes fully masked rows), which Dynamo records when it cannot prove that a
fused kernel applies at trace time (BERT with its padding mask, on an H200). Both materialise the T x S score
matrix; as `sdpa` the runtime calls torch's fused attention (flash / cuDNN / memory-efficient), which chooses
its kernel on the real tensors. Applied on CUDA only: on the CPU the fused kernels are not faster.
"""
from __future__ import annotations

import math

import torch

from ..ir import Graph, Node, TensorType, Value
from ..ir.types import dense_order, dense_strides
from .cleanup import canonicalize, dce

_PASS = ("view", "cast", "alias", "copy")  # ops that change neither the values (beyond rounding) nor the math
_THROUGH = _PASS + ("expand",)  # and a same-rank broadcast


def _scalar_of(n: Node) -> float | None:
    """The scalar factor of `x * c`, `c * x` or `x / c` (None for other nodes)."""
    if n.op == "mul":
        vals = [v for v in n.inputs if not isinstance(v, Value)]
        return float(vals[0]) if len(vals) == 1 and isinstance(vals[0], (int, float)) else None
    if n.op == "div" and not isinstance(n.inputs[1], Value) and isinstance(n.inputs[1], (int, float)):
        return 1.0 / float(n.inputs[1])
    return None


def _operand(v: Value, transposed: bool) -> tuple[Value, float] | None:
    """Follow a bmm operand back to a 4-D [B, H, L, D] value through views, casts and scalar scaling; with
    `transposed`, exactly one swap of the last two dims must be crossed. Returns (value, scale)."""
    scale, swapped = 1.0, False
    while True:
        p = v.producer
        if v.type.rank == 4 and swapped == transposed and (
                p is None or p.op not in _PASS + ("mul", "div") or p.op == "view" and p.inputs[0].type.rank != 4):
            return v, scale  # (a view from another rank: GQA's repeat_kv, [B, KVH, n, S, D] -> [B, H, S, D])
        if p is None:
            return None
        if p.op == "permute":
            dims = [d % 4 for d in p.attrs["dims"]] if p.inputs[0].type.rank == 4 else None
            if dims != [0, 1, 3, 2] or swapped:
                return None if dims != [0, 1, 2, 3] else (p.inputs[0], scale)
            swapped = True
        elif p.op in _THROUGH:
            if p.op == "expand" and p.inputs[0].type.rank != v.type.rank:
                return None
        elif (c := _scalar_of(p)) is not None:
            scale *= c
            v = next(x for x in p.inputs if isinstance(x, Value))
            continue
        else:
            if v.type.rank == 4 and swapped == transposed:
                return v, scale
            return None
        v = p.inputs[0]


def _back(v: Value) -> Value:
    while v.producer is not None and v.producer.op in _THROUGH:
        v = v.producer.inputs[0]
    return v


def _is_zero(v) -> bool:
    if not isinstance(v, Value):
        return v == 0
    p = v.producer
    return p is not None and p.op in ("full", "full_like", "scalar_tensor") and \
        (p.attrs.get("fill_value", p.attrs.get("s")) == 0)


def _match(bmm2: Node):
    """(q, k, v, mask, scale) of an attention that ends in bmm2, or None."""
    probs = _back(bmm2.inputs[0])
    p = probs.producer
    if p is not None and p.op == "where" and _is_zero(p.inputs[1]) and isinstance(p.inputs[2], Value):
        probs = _back(p.inputs[2])  # the math path's "safe" softmax: fully masked rows become 0
        p = probs.producer
    if p is None or p.op != "softmax" or p.attrs.get("dim") % probs.type.rank != probs.type.rank - 1:
        return None
    scores, mask, scale = _back(p.inputs[0]), None, 1.0
    while scores.producer is not None and scores.producer.op != "bmm":
        s = scores.producer
        if (c := _scalar_of(s)) is not None:
            scale *= c
            scores = _back(next(x for x in s.inputs if isinstance(x, Value)))
        elif s.op == "add" and mask is None and all(isinstance(x, Value) for x in s.inputs):
            a, b = s.inputs
            a_bmm = _back(a).producer is not None and _back(a).producer.op in ("bmm", "mul", "div")
            scores, mask = (_back(a), b) if a_bmm else (_back(b), a)
        else:
            return None
    if scores.producer is None:
        return None
    bmm1 = scores.producer
    q = _operand(bmm1.inputs[0], transposed=False)
    k = _operand(bmm1.inputs[1], transposed=True)
    v = _operand(bmm2.inputs[1], transposed=False)
    if q is None or k is None or v is None or v[1] != 1.0:
        return None
    (q, sq), (k, sk) = q, k
    B, H, T, D = q.type.shape
    if k.type.shape[:2] != (B, H) or v[0].type.shape[:3] != k.type.shape[:3] or k.type.shape[3] != D:
        return None
    if not (q.type.dtype == k.type.dtype == v[0].type.dtype) or not q.type.dtype.is_floating_point:
        return None
    if bmm1.out.type.shape != (B * H, T, k.type.shape[2]) or bmm2.out.type.shape != (B * H, T, v[0].type.shape[3]):
        return None
    if mask is not None:
        ms = mask.type.shape
        full = (B, H, T, k.type.shape[2])
        if len(ms) > 4 or any(a not in (1, b) for a, b in zip(ms[::-1], full[::-1])):
            return None
    return q, k, v[0], mask, scale * sq * sk


def _grouped(v: Value, heads: int) -> tuple[Value, int] | None:
    """GQA's repeat_kv: v = [B, KVH, S, D] unsqueezed to [B, KVH, 1, S, D], expanded to [B, KVH, n, S, D] and
    reshaped to [B, KVH * n, S, D] = `heads` heads. Returns (the [B, KVH, S, D] value, KVH), or None."""
    while v.producer is not None and v.producer.op in ("view", "copy", "alias"):
        v = v.producer.inputs[0]
    e = v.producer
    if e is None or e.op != "expand" or v.type.rank != 5:
        return None
    B, kvh, n, S, D = v.type.shape
    if kvh * n != heads or e.inputs[0].type.shape != (B, kvh, 1, S, D):
        return None
    src = e.inputs[0]
    while src.type.rank == 5 and src.producer is not None and (
            src.producer.op in ("view", "unsqueeze", "alias", "copy")
            or src.producer.op == "slice" and src.producer.inputs[0].type.shape == src.type.shape):
        src = src.producer.inputs[0]
    return (src, kvh) if src.type.shape == (B, kvh, S, D) else None


def use_sdpa_gqa(graph: Graph, devices: tuple[str, ...]) -> None:
    """An `sdpa` whose k and v are GQA's repeat_kv of [B, KVH, S, D] values reads those values with
    `enable_gqa=True`: the fused kernels (cuDNN, flash) take grouped k/v directly, so the two copies that
    materialise the expanded k and v (20 us per LLaMA-style layer at b4x512 on an H200, as long as the attention
    kernel itself) are not made. The captured kernel (`variant`) runs on them (ir/ops.py `_sdpa` expands them
    for one that refuses); without one, only a maskless attention is rewritten (torch's choice with a mask and
    grouped k/v may be its math fallback)."""
    for n in graph.nodes:
        if n.op != "sdpa" or n.out.type.device not in devices or n.attrs.get("enable_gqa") or (
                len(n.inputs) > 3 and not n.attrs.get("variant") and n.out.type.device != "cpu"):
            continue
        heads = n.inputs[0].type.shape[1]
        k, v = _grouped(n.inputs[1], heads), _grouped(n.inputs[2], heads)
        if k is None or v is None or k[1] != v[1]:
            continue
        n.inputs = [n.inputs[0], k[0], v[0]] + list(n.inputs[3:])
        n.attrs = {**n.attrs, "enable_gqa": True}


def fold_query_scale(graph: Graph) -> Graph:
    """`sdpa(view(q * c), k, v, scale=s)` -> `sdpa(view(q), k, v, scale=s * c)`: HF's OPT (and the BART family)
    scale the query projection and call SDPA with scale=1; the multiply is a pass over q of its own (on CUDA,
    where the projection runs in cuBLAS, a kernel) that the attention kernel does for free. Only when the
    scaled q is read by nothing else, through pure views (reshapes, permutes)."""
    users = graph.users()
    for n in graph.nodes:
        if n.op != "sdpa" or not isinstance(n.inputs[0], Value):
            continue
        reader, v = n, n.inputs[0]
        while v.producer is not None and v.producer.op in ("view", "permute", "alias") \
                and len(users.get(v, [])) == 1:
            reader, v = v.producer, v.producer.inputs[0]
        p = v.producer
        if p is None or p.op != "mul" or len(users.get(v, [])) != 1 or (c := _scalar_of(p)) is None:
            continue
        x = next(a for a in p.inputs if isinstance(a, Value))
        if x.type.shape != v.type.shape or x.type.dtype != v.type.dtype or x.type.strides != v.type.strides:
            continue
        scale = n.attrs.get("scale")
        scale = 1.0 / math.sqrt(n.inputs[0].type.shape[-1]) if scale is None else scale
        reader.inputs = [x if a is v else a for a in reader.inputs]
        n.attrs = {**n.attrs, "scale": scale * c}
        users = graph.users()
    return graph


def fuse_attention(graph: Graph, devices: tuple[str, ...] = ("cuda",)) -> Graph:
    """Replace each matched attention by an `sdpa` node (see the module docstring); GQA's expanded k/v are read
    grouped (`use_sdpa_gqa`)."""
    nodes: list[Node] = []
    for n in graph.nodes:
        nodes.append(n)
        if n.op != "bmm" or n.out.type.device not in devices:
            continue
        m = _match(n)
        if m is None:
            continue
        q, k, v, mask, scale = m
        new: list[Node] = []
        inputs = [q, k, v]
        if mask is not None:
            if mask.type.dtype not in (torch.bool, q.type.dtype):
                new.append(graph.make_node("cast", [mask], {"dtype": q.type.dtype}, source=n.source))
                mask = new[-1].out
            inputs.append(mask)
        att = graph.make_node("sdpa", inputs, {"is_causal": False, "scale": scale}, source=n.source)
        order = dense_order(q.type)
        if order is not None:  # the fused kernels lay their output out like the query
            t = att.out.type
            att.out.type = TensorType(t.shape, t.dtype, dense_strides(t.shape, order), t.device)
        new.append(att)
        out = att.out
        if out.type.dtype != n.out.type.dtype:
            new.append(graph.make_node("cast", [out], {"dtype": n.out.type.dtype}, source=n.source))
            out = new[-1].out
        new.append(graph.make_node("view", [out], {"size": list(n.out.type.shape)}, source=n.source))
        nodes[-1:] = [n] + new  # the old bmm stays until DCE removes the dead pattern
        graph.replace_all_uses(n.out, new[-1].out)
        for u in graph.users().get(new[-1].out, []):  # bmm's [B*H, T, D] viewed back to [B, H, T, D]: the result
            if u.op == "view" and u.out.type.shape == out.type.shape:  # itself, which a [b, t, h, d]-ordered one
                graph.replace_all_uses(u.out, out)  # cannot pass through [B*H, T, D] as a view (a copy)
    graph.nodes = nodes
    use_sdpa_gqa(graph, devices)
    fold_query_scale(dce(graph))  # (the dead bmm patterns still read the scaled q)
    # the math path's fp32 result is cast back to the inputs' dtype: with the sdpa in that dtype, the pair of
    # casts around it is an exact round trip that canonicalize removes (else a matmul reading it takes the cast
    # as a prologue and cannot run in cuBLAS: BERT's attention output projection)
    return canonicalize(graph)
