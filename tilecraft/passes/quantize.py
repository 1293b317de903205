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


# the parameter operands of each quantized linear: positions in its inputs (qweight, scales, [zeros,] bias)
_QLINEAR_PARAMS = {"wq_linear_int8": (1, 2, 3), "wq_linear_int4": (1, 2, 3, 4)}


def _sibling_key(node):
    """What a quantized linear must share with a sibling to be merged with it, or None if it cannot be."""
    if node.op not in _QLINEAR_PARAMS:
        return None
    from ..ir import Value

    x, params = node.inputs[0], [node.inputs[i] for i in _QLINEAR_PARAMS[node.op]]
    *weights, bias = params
    if not isinstance(x, Value) or not all(isinstance(w, Value) and w.producer is None for w in weights) \
            or not (bias is None or isinstance(bias, Value) and bias.producer is None):
        return None
    q = weights[0].type
    return (id(x), node.op, node.attrs.get("group_size"), q.shape[1:], q.dtype,
            None if bias is None else bias.type.dtype,
            tuple((w.type.dtype, w.type.shape[1:]) for w in weights[1:]))


def _decode_rows(node) -> bool:
    """Does the quantized linear run its rows in the Triton GEMM (2 <= M below codegen's "aten" threshold)? There
    two merged siblings of equal size become one `pair` node (its tiles hold both halves' columns, so an epilogue
    that combines them, SwiGLU's silu(gate) * up, fuses) and a norm before it folds (fold_rms_norm)."""
    from ..codegen.qmatmul import ATEN_MIN_M

    x = node.inputs[0].type
    return 2 <= x.numel // max(1, x.shape[-1]) < ATEN_MIN_M


def merge_sibling_qlinears(graph):
    """Quantized linears that read the same activation (LLaMA's q/k/v projections, gate/up) become ONE quantized
    linear over their row-concatenated parameters, then slices of its last dim: one kernel launch in place of
    two or three, which is what decode-sized steps (latency bound) pay for. Two siblings of equal size (gate/up)
    at decode sizes become a `pair` node with one output per sibling (see _decode_rows), not slices.

    The `cat`s read parameters alone, so the runtime computes them once and caches them (static steps); they
    carry `views=True`, so a cat whose inputs are consecutive row blocks of one storage (as tilecraft.quantize
    lays out sibling layers) is a view of it, not a copy (see tilecraft.ir.ops' cat). A group is merged only
    where every sibling's inputs already exist at the first sibling's position; a linear whose output is a
    graph output (or a view of one) is left alone, so outputs keep eager's contiguous strides."""
    from ..ir import is_view

    users, outs = graph.users(), {id(v) for v in graph.outputs}

    def escapes(v):  # a graph output (or a view of one) stays contiguous, as eager returns it
        return id(v) in outs or any(is_view(u) and escapes(u.out) for u in users.get(v, []))

    groups: dict = {}
    for n in graph.nodes:
        key = _sibling_key(n)
        if key is not None and not escapes(n.out):
            groups.setdefault(key, []).append(n)
    for sibs in groups.values():
        if len(sibs) < 2:
            continue
        pos = {id(n): i for i, n in enumerate(graph.nodes)}
        first = min(pos[id(n)] for n in sibs)
        defined = {id(v) for v in graph.inputs} | {id(o) for n in graph.nodes[:first] for o in n.outputs}
        if not all(id(v) in defined for n in sibs for v in n.input_values()):
            continue
        sibs.sort(key=lambda n: pos[id(n)])
        head, idx = sibs[0], _QLINEAR_PARAMS[sibs[0].op]
        pair = len(sibs) == 2 and sibs[0].out.type.shape == sibs[1].out.type.shape and _decode_rows(head)
        new, merged_ins = [], [head.inputs[0]]
        for i in idx:
            if head.inputs[i] is None:
                merged_ins.append(None)
                continue
            new.append(graph.make_node("cat", [n.inputs[i] for n in sibs], {"dim": 0, "views": True},
                                       source=head.source))
            merged_ins.append(new[-1].out)
        merged_ins += head.inputs[max(idx) + 1:]
        mm = graph.make_node(head.op, merged_ins, {**head.attrs, **({"pair": True} if pair else {})},
                             source=" + ".join(dict.fromkeys(n.source for n in sibs if n.source)))
        new.append(mm)
        last, start = mm.out.type.rank - 1, 0
        for n, out in zip(sibs, mm.outputs if pair else ()):  # (a pair: each sibling's result is an output)
            graph.replace_all_uses(n.out, out)
        for n in sibs if not pair else ():
            end = start + n.inputs[1].type.shape[0]
            sl = graph.make_node("slice", [mm.out], {"dim": last, "start": start, "end": end}, source=n.source)
            new.append(sl)
            graph.replace_all_uses(n.out, sl.out)
            start = end
        for n in sibs:
            graph.nodes.remove(n)
        graph.nodes[first:first] = new
    return graph


# columns per partial sum of squares (sumsq_tiles): the writing GEMM's tiles must hold whole ones (its kernel refuses
# narrower BLOCK_N, see codegen/qmatmul.py); wider ones mean fewer sums for every program of the next GEMM to read
RMS_TILE = 32


def _rms_norm_input(y, users):
    """(h, g, eps) when y = g * RMSNorm(h) as LLaMA-family models write it (h cast to float32 or float32 already:
    h * rsqrt(mean(h^2, -1) + eps), cast back, times a 1-D weight g of h's dtype), every intermediate used only
    inside it; else None."""
    from ..ir import Value

    def only(v, n=1):
        return isinstance(v, Value) and v.producer is not None and len(users.get(v, [])) == n

    p = y.producer
    if p is None or p.op != "mul" or not all(isinstance(v, Value) for v in p.inputs):
        return None
    for g, n in (p.inputs, p.inputs[::-1]):
        if g.type.rank == 1 and only(n):
            break
    else:
        return None
    if n.producer.op == "cast":
        n = n.producer.inputs[0]
        if not only(n):
            return None
    m = n.producer
    if m.op != "mul" or not all(isinstance(v, Value) for v in m.inputs):
        return None
    for hf, r in (m.inputs, m.inputs[::-1]):
        chain = []
        v = r
        for op in ("rsqrt", "add", "mean", "pow_scalar"):
            if not only(v) or v.producer.op != op:
                break
            chain.append(v.producer)
            v = v.producer.inputs[0]
        else:
            if v is hf:
                break
    else:
        return None
    rsqrt, add, mean, pw = chain
    if pw.attrs.get("exponent") != 2 or list(mean.attrs.get("dim") or ()) not in ([-1], [hf.type.rank - 1]) \
            or not mean.attrs.get("keepdim") or not isinstance(add.inputs[1], (int, float)) \
            or hf.type.dtype != torch.float32:
        return None
    h = hf
    if hf.producer is not None and hf.producer.op == "cast":  # (16-bit h: its float32 copy feeds the norm only)
        h = hf.producer.inputs[0]
        if len(users.get(hf, [])) != 2:
            return None
    if h.type.dtype != y.type.dtype or g.type.dtype != y.type.dtype or g.type.shape != (h.type.shape[-1],) \
            or h.type.shape != y.type.shape or h.type.shape[-1] % RMS_TILE:
        return None
    return h, g, float(add.inputs[1])


def fold_rms_norm(graph):
    """An RMSNorm whose only readers are bias-free quantized linears at decode sizes (LLaMA's input and
    post-attention norms, the final norm before lm_head), with its input h written by a quantized linear's
    epilogue (the residual add of o_proj/down_proj), costs a kernel launch of its own between two GEMMs. Rewritten as
    hg = h * g (a pointwise op, fused into the producing GEMM's epilogue), ss = sumsq_tiles(h) (its partial sums of
    squares, also written by that epilogue) and a quantized linear of hg with the `rms_eps` attribute and ss as its
    last input: its epilogue scales each row by rsqrt(sum(ss) / K + eps). So the norm costs no launch.
    Numerically the normalized row is not rounded before the weight multiplies it (g * h is, once): within
    the low-precision tolerance of the eager model (HF rounds h * rsqrt(...) to bf16, then multiplies by g)."""
    from ..ir import Value

    users, outs = graph.users(), {id(v) for v in graph.outputs}
    for lin in list(graph.nodes):
        if lin.op not in _QLINEAR_PARAMS or "rms_eps" in lin.attrs or not _decode_rows(lin):
            continue
        y = lin.inputs[0]
        if not isinstance(y, Value) or id(y) in outs or any(
                u.op not in _QLINEAR_PARAMS or u.inputs[0] is not y or "rms_eps" in u.attrs
                or u.inputs[_QLINEAR_PARAMS[u.op][-1]] is not None for u in users.get(y, [])):
            continue  # (a bias would have to come after the rows' scale: such linears keep their norm)
        found = _rms_norm_input(y, users)
        if found is None:
            continue
        h, g, eps = found
        src = h.producer
        if src is None or not (src.op in _QLINEAR_PARAMS or src.op == "add" and any(
                isinstance(v, Value) and v.producer is not None and v.producer.op in _QLINEAR_PARAMS
                for v in src.inputs)):
            continue  # (no quantized GEMM writes h: its epilogue cannot take the norm's share)
        at = min(graph.nodes.index(u) for u in users[y])
        hg = graph.make_node("mul", [h, g], source=y.producer.source)
        ss = graph.make_node("sumsq_tiles", [h], {"tile": RMS_TILE}, source=y.producer.source)
        new = [hg, ss]
        for u in users[y]:
            q = graph.make_node(u.op, [hg.out, *u.inputs[1:], ss.out], {**u.attrs, "rms_eps": eps}, source=u.source)
            new.append(q)
            for a, b in zip(u.outputs, q.outputs):
                graph.replace_all_uses(a, b)
            graph.nodes.remove(u)
        graph.nodes[at:at] = new
        users = graph.users()
    return graph
