"""Layout passes: move reshapes out of the way of fusion.

`sink_views`: a pointwise op applied to `view(a)`, where the view only regroups leading dims (the last dim is
unchanged, as when nn.Linear runs on a 3-D input: addmm → view → gelu), is rewritten to apply to `a` directly,
followed by the view. The op then sits next to its producer and fuses into it (e.g. as a matmul epilogue),
and the view becomes free index arithmetic. A widening cast (bf16 -> fp32, as RMSNorm's upcast of the residual
stream) that no moved op reads is put back above its view: moved, it would join the matmul epilogue and make it
store a second, twice as wide copy of the result for the norm to read (and keep the residual add from folding
into cuBLAS's addmm); left on the view, the norm's kernel casts as it loads.
"""
from __future__ import annotations

import math

from ..ir import Graph, Node, TensorType, Value, base_value, is_view
from ..ir.ops import REGISTRY
from . import fusion
from .cleanup import rewrite_inputs, rewrite_outputs


def _leading_reshape(v: Value) -> Value | None:
    """If v = view(a) keeps the last dim and the element count, return a (computed, not a graph input)."""
    p = v.producer
    if p is None or p.op != "view":
        return None
    a = p.inputs[0]
    if a.producer is None or REGISTRY[a.producer.op].category in ("view", "data"):
        return None
    if not a.type.shape or not v.type.shape or a.type.shape[-1] != v.type.shape[-1] or a.type.numel != v.type.numel:
        return None
    return a


def _trailing_broadcast(v: Value, last: int) -> bool:
    """Broadcasts the same way against [.., last] whatever the leading dims (e.g. a bias vector)."""
    s = v.type.shape
    return all(d == 1 for d in s[:-1]) and (not s or s[-1] in (1, last))


def _readers(v: Value, users) -> list[Node]:
    """The nodes that read v, through views."""
    out, stack = [], [v]
    while stack:
        for u in users.get(stack.pop(), []):
            if REGISTRY[u.op].category == "view":
                stack.append(u.outputs[0])
            else:
                out.append(u)
    return out


def _only_feeds_reductions(v: Value, users) -> bool:
    """Its consumers (through views) are all reductions: keep it in the reduction's shape, to fuse there."""
    out = _readers(v, users)
    return bool(out) and all(REGISTRY[u.op].template == "reduction" for u in out)


def _widening_cast(n: Node) -> bool:
    t, x = n.out.type, n.inputs[0].type
    return n.op == "cast" and t.dtype.is_floating_point and x.dtype.is_floating_point and \
        t.dtype.itemsize > x.dtype.itemsize


def _norm_shape(add: Node, users) -> tuple | None:
    """The shape a LayerNorm reads this residual add in, when the add is one for the norm's prologue
    (fusion.residual_for_a_norm): the add moves to that shape (GPT-2 reads it as computed, [b, t, d]; OPT
    flattens to [b*t, d] before one norm and back to [b, t, d] before the next), so the norm fuses it."""
    if add.op != "add" or not any(base_value(v).producer is not None and base_value(v).producer.op == "addmm"
                                  for v in add.input_values()):
        return None
    readers = _readers(add.out, users)
    if not fusion.residual_for_a_norm(add, "addmm", readers):
        return None
    shapes = {u.inputs[0].type.shape for u in readers if fusion.is_reduction(u)}
    shape = shapes.pop() if len(shapes) == 1 else None
    t = add.out.type
    ok = shape and shape[-1] == t.shape[-1] and math.prod(shape) == t.numel
    return shape if ok else t.shape  # a norm in another shape: the add stays (the norm may still fuse it)


def sink_views(graph: Graph) -> Graph:
    nodes: list[Node] = []
    users = graph.users()
    casts: list[tuple[Node, Node]] = []  # widening casts moved, with their view back
    repl: dict[int, Value] = {}  # id(output of a moved node) -> the view back of its moved copy
    for n in graph.nodes:
        rewrite_inputs(n, repl)
        nodes.append(n)
        if REGISTRY[n.op].category != "pointwise" or len(n.outputs) != 1:
            continue
        out = n.out.type
        target = _norm_shape(n, users)
        if target is None and not _only_feeds_reductions(n.out, users):  # the first operand reshaped from a value
            target = next((a.type.shape for v in n.input_values()
                           if (a := _leading_reshape(v)) is not None and v.type.shape == out.shape), None)
        if target is None or tuple(target) == out.shape:
            continue
        new_inputs, ok, pre = [], True, []
        for v in n.inputs:
            if not isinstance(v, Value):
                new_inputs.append(v)
                continue
            a = _leading_reshape(v)
            if a is not None and a.type.shape == target and v.type.shape == out.shape:
                new_inputs.append(a)
            elif v.type.shape == out.shape:
                view = graph.make_node("view", [v], {"size": list(target)}, source=n.source)
                pre.append(view)
                new_inputs.append(view.out)
            elif _trailing_broadcast(v, target[-1]):
                new_inputs.append(v)
            else:
                ok = False
                break
        if not ok:
            continue
        moved = graph.make_node(n.op, new_inputs, dict(n.attrs), name=n.out.name, source=n.source)
        if moved.out.type.shape != tuple(target) or moved.out.type.dtype != out.dtype:
            continue
        back = graph.make_node("view", [moved.out], {"size": list(out.shape)}, source=n.source)
        nodes[-1:] = pre + [moved, back]
        repl[id(n.out)] = back.out
        if _widening_cast(moved):
            casts.append((moved, back))
    rewrite_outputs(graph, repl)
    graph.nodes = nodes
    _unsink_casts(graph, casts)
    return graph


def _unsink_casts(graph: Graph, casts: list[tuple[Node, Node]]) -> None:
    """A moved widening cast read only by its view back goes back on the view: cast(view(x)), not
    view(cast(x)) (see the module doc)."""
    users = graph.users()
    outputs = {id(v) for v in graph.outputs if isinstance(v, Value)}
    for moved, back in casts:
        if [id(u) for u in users.get(moved.out, [])] != [id(back)] or id(moved.out) in outputs:
            continue
        view = graph.make_node("view", [moved.inputs[0]], dict(back.attrs), source=back.source)
        cast = graph.make_node("cast", [view.out], dict(moved.attrs), name=moved.out.name, source=moved.source)
        i = graph.nodes.index(back)
        graph.nodes[i:i + 1] = [view, cast]
        graph.nodes.remove(moved)
        graph.replace_all_uses(back.out, cast.out)


def _cl_strides(shape) -> tuple[int, ...]:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def _is_cl(t) -> bool:
    return t.rank == 4 and all(a == b for a, b, s in zip(t.strides, _cl_strides(t.shape), t.shape) if s != 1)


def wants_channels_last(graph: Graph) -> bool:
    """The default decision: NHWC pays for fp16/bf16 convolutions on CUDA (tensor-core kernels in cuDNN) when
    the one conversion of an NCHW input is shared by a chain of convolutions, or the input is NHWC already.
    Measured on an H100 (bench/anchors.py, conv3x3-BN-ReLU 32x64x56x56 fp16): for a single conv on NCHW input
    the input copy and the NHWC output read by an NCHW residual cost more than cuDNN's NHWC kernel saves."""
    import torch

    convs = [n for n in graph.nodes if n.op == "convolution" and n.inputs[0].type.device == "cuda" and
             n.inputs[0].type.dtype in (torch.float16, torch.bfloat16) and n.inputs[1].type.shape[0] >= 16]
    return len(convs) >= 2 or any(_is_cl(n.inputs[0].type) for n in convs)


def channels_last(graph: Graph, enabled: bool | None = None) -> Graph:
    """Run 2-D convolutions in NHWC: convert each conv input that is not NHWC yet (one copy), and let pointwise
    ops on NHWC values produce NHWC, so a conv → pointwise → conv chain needs no further copy. Values that
    are graph outputs keep eager's (contiguous) layout."""
    if enabled is None:
        enabled = wants_channels_last(graph)
    if not enabled:
        return graph
    from ..ir.types import TensorType

    outputs = {id(v) for v in graph.outputs if isinstance(v, Value)}
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.op == "convolution" and not n.attrs.get("transposed") and n.inputs[0].type.rank == 4:
            new_inputs = list(n.inputs)
            for i in (0, 1):
                x = n.inputs[i]
                p = x.producer
                if not _is_cl(x.type) and p is not None and REGISTRY[p.op].category == "pointwise" and \
                        id(x) not in outputs:  # its kernel stores NHWC directly: no copy
                    x.type = TensorType(x.type.shape, x.type.dtype, _cl_strides(x.type.shape), x.type.device)
                if not _is_cl(x.type):
                    conv = graph.make_node("channels_last", [x], {}, source=n.source)
                    nodes.append(conv)
                    new_inputs[i] = conv.out
            n.inputs = new_inputs  # inputs are NHWC now, and so is the output
            t = REGISTRY["convolution"].infer(new_inputs, n.attrs)[0]
            n.out.type = TensorType(t.shape, t.dtype, _cl_strides(t.shape), t.device)  # cuDNN/oneDNN: NHWC out
        elif REGISTRY[n.op].category == "pointwise" and n.out.type.rank == 4 and id(n.out) not in outputs and \
                any(isinstance(v, Value) and v.type.shape == n.out.type.shape and _is_cl(v.type)
                    for v in n.inputs):
            t = n.out.type
            n.out.type = TensorType(t.shape, t.dtype, _cl_strides(t.shape), t.device)
        nodes.append(n)
    graph.nodes = nodes
    return graph


def pad_matmuls(graph: Graph, devices: tuple[str, ...] = ("cuda",)) -> Graph:
    """A 16-bit GEMM whose output rows are not 16-byte aligned (GPT-2's 50257-word head) multiplies a copy of its
    weight padded with zero columns, and the result is sliced back: cuBLAS's fast kernels need aligned rows (on
    an H200 the unpadded head takes 3.4 ms in cuBLAS, padded 0.45 ms). Only weights that are graph inputs
    (parameters) are padded: the runtime pads them once and keeps the copy while they do not change."""
    import torch

    nodes: list[Node] = []
    for n in graph.nodes:
        nodes.append(n)
        if n.op not in ("mm", "addmm") or n.out.type.device not in devices:
            continue
        b = n.inputs[-1]
        K, N = b.type.shape
        dt = n.out.type.dtype
        if dt not in (torch.float16, torch.bfloat16) or (N * dt.itemsize) % 16 == 0 or N < 1024:
            continue
        base = b
        while base.producer is not None and REGISTRY[base.producer.op].category == "view":
            base = base.producer.inputs[0]
        if base.producer is not None:
            continue  # an activation: padding it would copy it on every call
        pad = -N % (16 // dt.itemsize)
        t = b.producer
        if t is not None and t.op == "permute" and list(t.attrs["dims"]) == [1, 0] and t.inputs[0] is base:
            # a transposed [N, K] weight (a tied LM head) is padded in its own layout and transposed back:
            # cuBLAS gets the same "T" operand as eager (a row-major padded copy took a slower NN kernel)
            new = [graph.make_node("constant_pad_nd", [base], {"pad": [0, 0, 0, pad], "value": 0.0},
                                   source=n.source)]
            new.append(graph.make_node("permute", [new[0].out], {"dims": [1, 0]}, source=n.source))
        else:
            new = [graph.make_node("constant_pad_nd", [b], {"pad": [0, pad], "value": 0.0}, source=n.source)]
        inputs = list(n.inputs)
        inputs[-1] = new[-1].out
        if n.op == "addmm" and n.inputs[0].type.shape[-1:] == (N,):
            new.append(graph.make_node("constant_pad_nd", [n.inputs[0]], {"pad": [0, pad], "value": 0.0},
                                       source=n.source))
            inputs[0] = new[-1].out
        elif n.op == "addmm" and n.inputs[0].type.shape[-1:] != (1,):
            continue
        mm = graph.make_node(n.op, inputs, dict(n.attrs), name=n.out.name, source=n.source)
        back = graph.make_node("slice", [mm.out], {"dim": 1, "start": 0, "end": N, "step": 1}, source=n.source)
        nodes[-1:] = new + [mm, back]
        graph.replace_all_uses(n.out, back.out)
    graph.nodes = nodes
    return graph


def _stride_order(t) -> list[int] | None:
    """The dims of t from outermost to innermost when its strides order them otherwise than row-major and no two
    elements overlap, dense or not: a slice of a permuted tensor (GPT-NeoX's q = `qkv.view(b, t, h, 3 * d)
    .transpose(1, 2)[..., :d]`, strides (t*h*3d, 3d, h*3d, 1)) is in [b, t, h, d] order. Else None."""
    from ..ir.types import dense_order

    order = dense_order(t)
    if order is not None or t.rank < 2 or t.is_contiguous:
        return order
    big = [d for d in sorted(range(t.rank), key=lambda d: (-t.strides[d], d)) if t.shape[d] != 1]
    if any(t.strides[d] <= 0 for d in big) or big == sorted(big) or any(
            t.strides[a] < t.strides[b] * t.shape[b] for a, b in zip(big, big[1:])):
        return None
    return big + [d for d in range(t.rank) if t.shape[d] == 1]


def _layout_source(n: Node, shape) -> Value | None:
    """The operand whose layout n's result takes: the first of the result's shape; for `cat`, the first equal
    to it but along the joined dim (NeoX's `cat([rotated, pass_through], -1)`)."""
    dim = n.attrs.get("dim", 0) % len(shape) if n.op == "cat" and shape else None
    for v in n.inputs:
        if isinstance(v, Value) and v.type.rank == len(shape) and all(
                a == b or d == dim for d, (a, b) in enumerate(zip(v.type.shape, shape))):
            return v
    return None


def _sdpa_layout(n: Node) -> None:
    """An `sdpa` node's result strides for its inputs' layouts now: what the captured CUDA kernel (`variant`)
    gives, by its meta function (cuDNN and flash lay the output out like q, memory-efficient always [b, t, h, d]);
    F.scaled_dot_product_attention's fused kernels (no variant) like q, as fuse_attention assumes."""
    from ..ir.types import TensorType, dense_strides

    t, variant = n.out.type, n.attrs.get("variant")
    if variant is not None:
        from ..ir.ops import sdpa_variant

        q, k, v, *mask = [x.type.meta() for x in n.inputs]
        try:
            out = sdpa_variant(variant, q, k, v, mask[0] if mask else None, n.attrs.get("is_causal", False),
                               n.attrs.get("scale"))
        except Exception:  # noqa: BLE001 - no meta function for it: keep the captured layout
            return
        if tuple(out.shape) != t.shape:
            return
        strides = tuple(out.stride())
    else:
        order = _stride_order(n.inputs[0].type)
        if order is None:
            return
        strides = dense_strides(t.shape, order)
    n.out.type = TensorType(t.shape, t.dtype, strides, t.device)


def _broadcast_read(v: Value, users) -> bool:
    """Is v read broadcast, its size-1 (or missing leading) dims stretched over a larger op (RoPE's cos/sin [1, t,
    d] against q's [b, h, t, d])? Its readers then walk it many times in their own row-major order, so it stays
    row-major: LLaMA's cos/sin come from a transposed [1, d, t] product, and following that layout made every
    RoPE kernel read them with a stride of t elements (16 RoPE launches of LLaMA-style b4x512: 214 us on an
    H200). (GQA's k read as repeated heads is not such a broadcast.)"""
    s = v.type.shape
    for u in _readers(v, users):
        if REGISTRY[u.op].category != "pointwise" or u.op == "copy":
            continue
        for o in u.outputs:
            r = o.type.shape if isinstance(o.type, TensorType) else ()
            if len(r) >= len(s) and o.type.numel > v.type.numel and all(
                    a == b or a == 1 for a, b in zip(s, r[len(r) - len(s):])):
                return True
    return False


def follow_input_layouts(graph: Graph, devices: tuple[str, ...] = ("cuda",)) -> Graph:
    """A pointwise op whose first full-shape operand is laid out in a permuted order produces its result in that
    order, as eager's TensorIterator does. So RoPE applied to `q.view(b, t, h, d).transpose(1, 2)` stays [b, t, h,
    d] in memory, the attention kernel returns that layout too, and `out.transpose(1, 2).reshape(b, t, h * d)`
    before the output projection is a free view instead of a copy (LLaMA-style b4x512 on an H200: 0.32 ms of
    copies per call). Graph outputs keep the row-major layout.

    The operand need not be dense (`_stride_order`), and a `cat` takes the layout of its first operand
    (`_layout_source`): GPT-NeoX's partial RoPE reads q and k as slices of the fused qkv projection and ends in
    `cat([rotated, pass_through], -1)`, which eager makes row-major [b, h, t, d]. There the cuDNN attention
    returned [b, h, t, d] and `.transpose(1, 2).reshape(b, t, h * d)` before `dense` was an ATen copy: 4 MiB
    read + 4 MiB written per layer at b4x512 (h16, d64, bf16), 50.8 us of 1.245 ms per call on an H100 (6
    layers). Now the RoPE kernel writes q and k in [b, t, h, d] order (the same 2 x 4 MiB it wrote before),
    each `sdpa` takes its result layout from its inputs' layouts (`_sdpa_layout`), and that reshape is a view."""
    from ..ir.types import TensorType, dense_strides

    outputs = {id(v) for v in graph.outputs if isinstance(v, Value)}
    users = graph.users()
    changed: set[int] = set()  # values whose strides this pass changed: views of them are typed again
    for n in graph.nodes:
        if REGISTRY[n.op].category == "view" and n.inputs and id(n.inputs[0]) in changed:
            t = REGISTRY[n.op].infer(n.inputs, n.attrs)[0]
            if t != n.out.type:
                n.out.type = t
                changed.add(id(n.out))
            continue
        if n.op == "sdpa" and n.out.type.device in devices and id(n.out) not in outputs:
            before = n.out.type
            _sdpa_layout(n)
            if n.out.type != before:
                changed.add(id(n.out))
            continue
        if REGISTRY[n.op].category != "pointwise" and n.op != "cat" or n.op == "copy" or len(n.outputs) != 1 \
                or id(n.out) in outputs:
            continue
        t = n.out.type
        if t.device not in devices or not t.is_contiguous:
            continue
        first = _layout_source(n, t.shape)
        order = _stride_order(first.type) if first is not None else None
        if order is None or _broadcast_read(n.out, users):
            continue
        n.out.type = TensorType(t.shape, t.dtype, dense_strides(t.shape, order), t.device)
        changed.add(id(n.out))
    return graph


def _viewable(src, size) -> bool:
    """Would torch's reshape of a tensor of type `src` to `size` be a view (no copy)?"""
    try:
        src.meta().view(size)
        return True
    except (RuntimeError, ValueError):  # meta tensors say ValueError
        return False


def materialize_reshapes(graph: Graph, devices: tuple[str, ...] = ("cuda",)) -> Graph:
    """A reshape that torch cannot do as a view (GQA's `repeat_kv`: an expanded k/v merged into the head dim) and
    whose result an op run through torch reads (the attention kernel) is preceded by a generated copy kernel: the
    runtime would otherwise make the copy with ATen's strided copy (0.25 ms per call of LLaMA-style b4x512 on an
    H200). The reshape of the copy is then a view. Generated kernels read such reshapes as index arithmetic and
    are left alone. (An attention that takes grouped k/v reads no such reshape: `use_sdpa_gqa` runs first.)"""
    from ..ir.types import TensorType

    users = graph.users()
    nodes: list[Node] = []

    def torch_reader(v: Value) -> bool:
        for u in users.get(v, []):
            if is_view(u) and torch_reader(u.outputs[0]):
                return True
            if REGISTRY[u.op].category == "opaque" or u.op == "torch_op":
                return True
        return False

    for n in graph.nodes:
        if n.op == "view" and n.out.type.device in devices and not _viewable(n.inputs[0].type, n.out.type.shape) \
                and torch_reader(n.out):
            x = n.inputs[0].type
            copy = graph.make_node("copy", [n.inputs[0]], {}, source=n.source,
                                   out_types=[TensorType(x.shape, x.dtype, None, x.device)])  # row-major
            nodes.append(copy)
            n.inputs = [copy.out] + list(n.inputs[1:])
        nodes.append(n)
    graph.nodes = nodes
    return graph
