"""The quantization step of `tilecraft.compile(model, quantize=scheme)` (delegates to tilecraft.quant), and
`fold_dequant_matmul`, the pass that turns a dequantize-then-matmul written in torch into one quantized linear.

`scheme` may carry an int4 group size as "int4_weight_only:64"; without one, int4 takes the largest of 128/64/32
that divides every Linear's in_features (so small models work with the plain scheme name)."""
from __future__ import annotations

from typing import NamedTuple

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
                u.op not in _QLINEAR_PARAMS or u.inputs[0] is not y or "rms_eps" in u.attrs or "rope" in u.attrs
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


def _slice_of(v, start: int, stop: int):
    """(x, the slice node) when v = x[..., start:stop] (a unit-step slice of the last dim that reaches at least
    `stop`), else None."""
    p = v.producer
    if p is None or p.op != "slice" or p.attrs.get("dim") % v.type.rank != v.type.rank - 1 \
            or p.attrs.get("step", 1) != 1 or (p.attrs.get("start") or 0) != start or p.attrs.get("end") < stop:
        return None
    return p.inputs[0], p


def _rope_of(v):
    """(x, cos, sin, the pattern's nodes) when v = x * cos + rotate_half(x) * sin (HF's apply_rotary_pos_emb on
    x [B, H, T, D]; rotate_half(x) = cat([-x[..., D/2:], x[..., :D/2]], -1); cos, sin [B or 1, 1, T, D] in x's
    dtype), else None."""
    from ..ir import Value

    add = v.producer
    if add is None or add.op != "add" or len(add.inputs) != 2 or not all(isinstance(a, Value) for a in add.inputs):
        return None
    muls = [a.producer for a in add.inputs]
    if any(m is None or m.op != "mul" or not all(isinstance(a, Value) for a in m.inputs) for m in muls):
        return None
    for plain, rot in (muls, muls[::-1]):
        for x, cos in (plain.inputs, plain.inputs[::-1]):
            for r, sin in (rot.inputs, rot.inputs[::-1]):
                cat = r.producer
                if x.type.rank != 4 or x.type.dtype != v.type.dtype or r.type.shape != x.type.shape \
                        or cat is None or cat.op != "cat" or len(cat.inputs) != 2 \
                        or cat.attrs.get("dim", 0) % 4 != 3 or not all(isinstance(a, Value) for a in cat.inputs):
                    continue
                B, _, T, D = x.type.shape
                neg, low = cat.inputs
                if D % 2 or neg.producer is None or neg.producer.op != "neg":
                    continue
                hi, lo = _slice_of(neg.producer.inputs[0], D // 2, D), _slice_of(low, 0, D // 2)
                if hi is None or lo is None or hi[0] is not x or lo[0] is not x:
                    continue
                if all(t.type.rank == 4 and t.type.dtype == x.type.dtype and t.type.shape[0] in (1, B)
                       and t.type.shape[1:] == (1, T, D) for t in (cos, sin)):
                    return x, cos, sin, [add, plain, rot, cat, neg.producer, hi[1], lo[1]]
    return None


def _head_columns(x, users):
    """(linear, its reader on the way to x (the slice, or the view), first column, columns) when x [B, H, T, D] =
    the heads of D columns of a quantized linear's [B, T, N] result from `first` on: permute(view(slice(y, -1,
    first, first + H * D)), [0, 2, 1, 3]) (or without the slice when H * D = N), each step read only by the next;
    else None."""
    def only(v):
        return len(users.get(v, [])) == 1

    p = x.producer
    if p is None or p.op != "permute" or list(p.attrs.get("dims", ())) != [0, 2, 1, 3] or not only(p.inputs[0]):
        return None
    view = p.inputs[0].producer
    B, H, T, D = x.type.shape
    if view is None or view.op != "view" or view.out.type.shape != (B, T, H, D):
        return None
    src, first, reader = view.inputs[0], 0, view
    if src.type.shape != (B, T, H * D):
        return None
    if src.producer is not None and src.producer.op == "slice":
        reader = src.producer
        if not only(src) or reader.attrs.get("dim") % 3 != 2 or reader.attrs.get("step", 1) != 1:
            return None
        first, src = reader.attrs.get("start") or 0, reader.inputs[0]
    lin = src.producer
    if lin is None or lin.op not in _QLINEAR_PARAMS or lin.attrs.get("pair") or lin.out is not src:
        return None
    return lin, reader, first, H * D


class _Rope(NamedTuple):
    """One RoPE of fuse_rope_qlinear: its result, what it rotates (x, heads of a quantized linear's result) with
    which tables, the pattern's nodes (_rope_of), the linear's reader on the way to x, x's first column and width."""
    out: object
    x: object
    cos: object
    sin: object
    nodes: list
    reader: object
    first: int
    width: int


def fuse_rope_qlinear(graph):
    """RoPE on q and k read from a quantized linear's result at decode sizes (LLaMA's merged q/k/v GEMM; see
    merge_sibling_qlinears) is that GEMM's epilogue: the linear gets the `rope` attribute (n_rot, D) and the cos and
    sin tables as its last inputs, and its result holds q and k rotated (the first n_rot columns, heads of D), so
    the rotated q and k are the same views of it as the unrotated ones were and the RoPE kernel before each
    attention (one launch per layer, ~1.2 us of LLaMA-492M's b1x16 step on an H200) is gone. The wq_gemm kernel's
    ROPE tiles hold columns c and c + D/2 of a head in their two halves (wq_gemm.py). Only where the rotated columns are
    a prefix of the result, the unrotated q/k are read by nothing but their RoPE, and every other reader (v) reads
    columns after them; numerically the rotation runs in float32 from the stored q/k (eager rounds its three
    products and sum to 16 bits: within the low-precision tolerance). TILECRAFT_ROPE_GEMM=0 turns it off."""
    import os

    from ..ir import Value
    from .cleanup import dce

    if os.environ.get("TILECRAFT_ROPE_GEMM", "1").strip().lower() in ("0", "false", "off", "no"):
        return graph
    users, outs = graph.users(), {id(v) for v in graph.outputs}
    found: dict = {}  # id(linear) -> (linear, [_Rope])
    for n in graph.nodes:
        r = _rope_of(n.out) if n.op == "add" else None
        cols = _head_columns(r[0], users) if r is not None else None
        if cols is not None and id(n.out) not in outs:  # (a returned k, a KV cache's, keeps eager's layout)
            found.setdefault(id(cols[0]), (cols[0], []))[1].append(_Rope(n.out, *r, *cols[1:]))
    changed = False
    for lin, ropes in found.values():
        y = lin.out
        if "rope" in lin.attrs or not _decode_rows(lin) or id(y) in outs or y.type.rank != 3:
            continue
        cos, sin, D = ropes[0].cos, ropes[0].sin, ropes[0].x.type.shape[-1]
        spans = sorted((r.first, r.first + r.width) for r in ropes)
        n_rot = spans[-1][1]
        if any(r.cos is not cos or r.sin is not sin or r.x.type.shape[-1] != D for r in ropes) or spans[0][0] \
                or any(a[1] != b[0] for a, b in zip(spans, spans[1:])) or y.type.shape[-1] % D or D & (D - 1) \
                or D < 16:  # (a power of two: the GEMM's tiles, at least 16 wide, hold pairs of one head)
            continue
        # the unrotated q/k feed their RoPE alone; the linear's other readers take columns after the rotated ones
        inner = {id(m) for r in ropes for m in r.nodes}
        if not all(all(id(u) in inner for u in users.get(v, [])) for r in ropes
                   for v in [r.x] + [m.out for m in r.nodes[1:]]):
            continue
        chain = {id(r.reader) for r in ropes}
        if not all(id(u) in chain or u.op == "slice" and u.attrs.get("dim") % 3 == 2 and u.attrs.get("step", 1) == 1
                   and (u.attrs.get("start") or 0) >= n_rot for u in users.get(y, [])):
            continue
        pos = {id(m): i for i, m in enumerate(graph.nodes)}
        at = pos[id(lin)]
        late = [t.producer for t in dict.fromkeys((cos, sin)) if t.producer is not None and pos[id(t.producer)] > at]
        if any(isinstance(v, Value) and v.producer is not None and pos[id(v.producer)] > at
               for p in late for v in p.inputs):
            continue  # (a table computed after the linear from values after it: not worth moving)
        for p in late:  # (HF's cos/sin unsqueezed where they are used: the views move before the linear)
            graph.nodes.remove(p)
            graph.nodes.insert(at, p)
        at += len(late)
        new = graph.make_node(lin.op, [*lin.inputs, cos, sin], {**lin.attrs, "rope": (n_rot, D)}, source=lin.source)
        graph.nodes[at] = new
        graph.replace_all_uses(y, new.out)
        for r in ropes:  # the rotated q/k are now the views that read the unrotated ones
            graph.replace_all_uses(r.out, r.x)
        changed = True
    return dce(graph) if changed else graph
