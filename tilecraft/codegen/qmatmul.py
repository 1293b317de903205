"""The quantized-matmul template: a `wq_linear_int8` / `wq_linear_int4` node and its pointwise epilogue as one
kernel.

The main loop is tilecraft.quant's static GEMV/GEMM source (chosen by M, as `make_kernel` does; the same
`QuantKernel`, default configs and config space). Codegen replaces the source's store section (after the
`# EPILOGUE` line, where `acc` holds the fp32 [BLOCK_M, BLOCK_N] result with its bias) with the group's fused
ops and stores, emitted like the matmul template's epilogue; the activation's leading dims are the kernel's
rows. The GEMM reduces its K splits before the epilogue; the GEMV's split-K adds atomically, so its fused
kernels take SPLIT_K = 1.

A second backend, config `BACKEND: "aten"` (as for matmul groups): dequantize the weight into a shared scratch
buffer (one Triton kernel), multiply through ATen (cuBLAS; the bias in its epilogue), then run the group's other
ops as one generated pointwise kernel; on an sm_90 GPU with nvcc and the CUTLASS headers, CUTLASS's mixed-input
GEMM on the quantized weight instead (quant/kernels.py `cutlass_matmul`; the residual in its epilogue). It is
the default for M >= 256 on a GPU, where a tensor-core GEMM library beats a Triton GEMM that dequantizes each
weight tile once per row block; the schedule database overrides it.
"""
from __future__ import annotations

import os
import re

import torch

from ..ir import REGISTRY, Value
from ..ir.types import contiguous_strides, next_pow2
from ..passes.fusion import Group
from .emit import Args, Emitter, Unsupported, decompose, identifiers, interpreting, round_to, store
from .kernel import ArgSpec
from .matmul import residual_add
from .pointwise import pointwise_kernel

# from this many rows on a GPU, the default backend is "aten" (dequantize + cuBLAS); TILECRAFT_QMATMUL_ATEN_MIN_M
ATEN_MIN_M = int(os.environ.get("TILECRAFT_QMATMUL_ATEN_MIN_M", "256"))

MARK = "    # EPILOGUE"
EARLY = "    # EARLY LOADS\n"
PROLOGUE = "    # PROLOGUE LOADS\n"
# from this many rows on, a fused GEMM's epilogue loads wait after its main loop (EARLY), not before it (PROLOGUE):
# a large tile's residual held through the loop would take too many registers
PROLOGUE_MAX_M = 16
SIGNATURE = "x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, out_ptr,"


def row_stride(t) -> int | None:
    """The stride between rows when the leading dims of `t` flatten into one (last dim contiguous), else None."""
    if t.rank == 0 or (t.shape[-1] > 1 and t.strides[-1] != 1):
        return None
    dims = [(n, st) for n, st in zip(t.shape[:-1], t.strides[:-1]) if n != 1]
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return dims[-1][1] if dims else t.shape[-1]


def fused_source(source: str, names: list[str], body: list[str], has_zeros: bool, has_bias: bool,
                 early: list[str] = (), prologue: bool = False) -> str:
    """The static kernel source with its tensor parameters x, w, s, [z], [b], `names` and its store section
    replaced by `body`; `early` lines (loads that need no result) go at the EARLY LOADS mark after the main loop,
    or with `prologue` at the PROLOGUE LOADS mark before it (unless the source assigns one of their names in
    between). An absent zero-point or bias parameter becomes an alias the kernel never reads."""
    if SIGNATURE not in source or MARK not in source or (early and EARLY not in source):
        raise Unsupported("quantized kernel source lacks the epilogue markers")
    if early:
        at = EARLY
        if prologue and PROLOGUE in source:
            between = source[source.index(PROLOGUE):source.index(MARK)]
            taken = set(re.findall(r"^\s+(\w+)\s*[+\-*]?=", between, re.M))
            if not taken & {re.match(r"\s+(\w+) =", line).group(1) for line in early}:
                at = PROLOGUE
        source = source.replace(at, at + "\n".join(early) + "\n", 1)
    params = "x_ptr, w_ptr, s_ptr, " + ("z_ptr, " if has_zeros else "") + ("b_ptr, " if has_bias else "")
    src = source.replace(SIGNATURE, params + ", ".join(names) + ",", 1)
    head, _ = src.split(MARK, 1)
    alias = ([] if has_zeros else ["    z_ptr = w_ptr"]) + ([] if has_bias else ["    b_ptr = x_ptr"])
    if alias:  # right after the kernel's (the last function's) signature
        start = head.rindex("\ndef ")
        at = start + re.search(r"\):\n", head[start:]).end()
        head = head[:at] + "\n".join(alias) + "\n" + head[at:]
    return head + MARK + " (fused by codegen)\n" + "\n".join(body) + "\n"


# what an epilogue line may name and still run before the main loop's result exists
_INDEX_NAMES = {"offs_m", "offs_n", "m_ok", "n_ok", "pid", "M", "N", "K", "BLOCK_M", "BLOCK_N", "mask", "other", "None",
                "True", "False"}


def early_loads(lines: list[str], params: set[str]) -> tuple[list[str], list[str]]:
    """(early, body) from an epilogue's lines: a top-level line binding index arithmetic or a load at such an index
    (a residual, a norm weight, the norm's partial sums, RoPE's tables) also runs early: for decode sizes before
    the main loop (PROLOGUE LOADS), which hides its memory latency, else right after it (EARLY LOADS), before the
    split-K round trips; the loads then leave the body (the index lines stay: the split-K reduction narrows m_ok,
    so omask is recomputed before the stores)."""
    early, body, known = [], [], _INDEX_NAMES | params
    for line in lines:
        m = re.match(r"    (\w+) = (.*)$", line)
        if m and identifiers(m.group(2)) <= known:
            early.append(line)
            if "tl.load(" in m.group(2):
                continue  # (what computes on the loaded values waits for them in the body)
            known.add(m.group(1))
        body.append(line)
    return early, body


def rope_epilogue(em: Emitter, args: Args, n_rot: int, D: int, out, cos: Value, sin: Value) -> None:
    """Rotate acc's q/k columns (those below n_rot) as HF's RoPE does: x * cos + rotate_half(x) * sin, in float32
    from x rounded to the result's dtype (as eager stores it). The tile's columns i, i + BLOCK_N/2 are a head's c,
    c + D/2 (wq_gemm.py ROPE), so rotate_half(x) is the tile's halves swapped, the first negated. The cos/sin index
    lines and loads need only the tile's indices, so they also run early (`early_loads`)."""
    T = out.shape[1]
    # (D a power of two; runs of BLOCK_N/2 contiguous columns from a multiple of it: wide cos/sin loads)
    em.line(f"rp_d = tl.max_contiguous(tl.multiple_of(offs_n & {D - 1}, BLOCK_N // 2), BLOCK_N // 2)")
    for t, tag in ((cos, "c"), (sin, "s")):
        s0, _, s2, s3 = (0 if n == 1 else st for n, st in zip(t.type.shape, t.type.strides))
        em.line(f"rp_{tag} = tl.load({args.load(t)} + ((offs_m // {T}) * {s0} + (offs_m % {T}) * {s2})[:, None] "
                f"+ rp_d[None, :] * {s3}, mask=m_ok[:, None], other=0.0)")
    em.line(f"rp_x = {round_to('acc', out.dtype)}")
    em.line("rp_a, rp_b = tl.split(tl.permute(tl.reshape(rp_x, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))")
    em.line("rp_r = tl.reshape(tl.permute(tl.join(-rp_b, rp_a), (0, 2, 1)), (BLOCK_M, BLOCK_N))")
    em.line(f"acc = tl.where((offs_n < {n_rot})[None, :], rp_x * rp_c.to(tl.float32) + rp_r * rp_s.to(tl.float32), "
            "acc)")


def qmatmul_kernel(group: Group, outputs: list[Value], name: str):
    from ..quant.kernels import QuantKernel, make_kernel

    qnodes = [n for n in group.nodes if REGISTRY[n.op].template == "qmatmul"]
    if len(qnodes) != 1:
        raise Unsupported(f"a qmatmul group holds one quantized linear, got {len(qnodes)}")
    node = qnodes[0]
    rope = node.attrs.get("rope")  # (passes.fuse_rope_qlinear) (n_rot, D): the cos and sin tables come last
    ins, tables = (node.inputs[:-2], node.inputs[-2:]) if rope else (node.inputs, None)
    eps = node.attrs.get("rms_eps")  # (passes.fold_rms_norm) the norm's partial sums of squares come next
    ins, ss = (ins[:-1], ins[-1]) if eps is not None else (ins, None)
    if node.op == "wq_linear_int4":
        x, w, s, z, bias = ins
        scheme, gsize, K = "int4_weight_only", int(node.attrs["group_size"]), w.type.shape[1] * 2
    else:
        (x, w, s, bias), z = ins, None
        scheme, gsize, K = "int8_weight_only", 0, w.type.shape[1]
    ids = {id(n) for n in group.nodes}
    if any(isinstance(v, Value) and v.producer is not None and id(v.producer) in ids for v in node.inputs):
        raise Unsupported("a quantized linear's operands must be stored tensors (no prologue)")
    xt, out = x.type, node.out.type
    sxm = row_stride(xt)
    if sxm is None or xt.shape[-1] != K:
        raise Unsupported(f"activation strides {xt.strides} do not flatten into rows of K={K}")
    N, M = w.type.shape[0], xt.numel // K
    base = make_kernel(scheme, M, N, K, xt.dtype, gsize, bias is not None, None, sxm)
    pair = bool(node.attrs.get("pair"))  # two outputs: the tile's columns of each half (wq_gemm.py PAIR)
    sums = [n for n in group.nodes if n.op == "sumsq_tiles"]  # partial sums of squares for the next GEMM's norm
    if (pair or eps is not None or sums) and base.template != "wq_gemm":
        raise Unsupported(f"pair, rms_eps and sumsq_tiles need the wq_gemm kernel, M={M} takes {base.template}")
    if sums and (pair or rope):
        raise Unsupported("sumsq_tiles in the epilogue of a pair or a rope")
    if rope and (pair or base.template != "wq_gemm" or out.rank != 3 or N % rope[1] or rope[1] & (rope[1] - 1)):
        raise Unsupported(f"rope needs the wq_gemm kernel's tiles over [B, T, N] whole heads, M={M}")

    args = Args()
    em = Emitter(group.nodes, args, "omask")
    em.zero = "om * 0 + on * 0"
    em.scalars.update(("pid", "pid_n", "pid_m", "pid_k", "k_start", "k_end"))
    em.line("om = offs_m[:, None]")
    em.line("on = offs_n[None, :]")
    em.line("omask = m_ok[:, None] & n_ok[None, :]")
    lead = out.shape[:-1]
    names = decompose(em, "om", list(range(len(lead))), lead, "r")
    canon = tuple(names[d] for d in range(len(lead))) + ("on",)

    def acc_value(name):
        def get(idx):
            if tuple(idx) != canon:
                raise Unsupported("quantized matmul result read at another index")
            return name
        return get

    accs = ("acc_a", "acc_b") if pair else ("acc",)
    for v, acc in zip(node.outputs, accs):
        em.special[id(v)] = acc_value(acc)
    if eps is not None:  # each row times rsqrt(the sum of its partial sums of squares / K + eps)
        nt = ss.type.shape[-1]
        if not ss.type.is_contiguous or ss.type.numel != M * nt:
            raise Unsupported("rms_eps: the partial sums of squares must be dense [rows, tiles]")
        em.line(f"rms_c = tl.arange(0, {next_pow2(nt)})")
        em.line(f"rms_ss = tl.load({args.load(ss)} + offs_m[:, None] * {nt} + rms_c[None, :], "
                f"mask=m_ok[:, None] & (rms_c < {nt})[None, :], other=0.0)")
        em.line(f"rms = tl.rsqrt(tl.sum(rms_ss, 1) / {K} + {float(eps)!r})[:, None]")
        for acc in accs:
            em.line(f"{acc} = {acc} * rms")
    if rope:  # acc's columns are pairs (c, c + D/2) of heads (wq_gemm.py ROPE)
        rope_epilogue(em, args, *rope, out, *tables)
    for v in outputs:
        if v.producer is None or v.producer.op != "sumsq_tiles":
            store(em, v, canon)
    for n in sums:  # this tile's sums over whole `tile`-column pieces of h (check_config refuses other BLOCK_N)
        h, t, nt = n.inputs[0], int(n.attrs["tile"]), n.out.type.shape[-1]
        if base.default["BLOCK_N"] % t or not n.out.type.is_contiguous or h.type.shape != out.shape:
            raise Unsupported(f"sumsq_tiles of tile {t} in a quantized GEMM's epilogue")
        hv = em.tmp(round_to(em.value(h, canon), h.type.dtype), name="hv")
        cols = em.tmp(f"(pid // tl.cdiv(M, BLOCK_M)) * (BLOCK_N // {t}) + tl.arange(0, BLOCK_N // {t})", name="ss_c")
        em.line(f"tl.store({args.store(n.out)} + offs_m[:, None] * {nt} + {cols}[None, :], "
                f"tl.sum(tl.reshape(tl.where(omask, {hv} * {hv}, 0.0), (BLOCK_M, BLOCK_N // {t}, {t})), 2), "
                f"mask=m_ok[:, None] & ({cols} < {nt})[None, :])")
    order = sorted(range(len(args.names)), key=lambda i: args.specs[i].is_output)  # loads, then stores
    if not args.specs[order[-1]].is_output:
        raise Unsupported("qmatmul group stores nothing")

    operands = [x, w, s] + ([z] if z is not None else []) + ([bias] if bias is not None else [])
    specs = [ArgSpec(xt.shape, xt.strides, xt.dtype)] + [
        ArgSpec(v.type.shape, tuple(contiguous_strides(v.type.shape)), v.type.dtype) for v in operands[1:]]
    early, body = early_loads(em.lines, set(args.names)) if EARLY in base.source else ([], em.lines)  # (GEMV)
    src = fused_source(base.source, [args.names[i] for i in order], body, z is not None, bias is not None, early,
                       prologue=M <= PROLOGUE_MAX_M)
    values = operands + [args.values[i] for i in order]
    aten = None if pair or rope or eps is not None or sums else aten_plan(group, node, scheme, gsize, len(operands),
                                                                           values, outputs, name)
    backend = "aten" if aten is not None and M >= ATEN_MIN_M and not interpreting() else "triton"
    cfg = {**base.default, "BACKEND": backend}
    if rope:  # (a tile holds pairs of one head's columns: wq_gemm.py ROPE)
        cfg["BLOCK_N"] = min(cfg["BLOCK_N"], rope[1])
    space = {**base.info["space"], "BACKEND": ["triton"] + (["aten"] if aten is not None else [])}
    k = QuantKernel(name=name, template=base.template, source=src, fn_name=base.fn_name,
                    args=specs + [args.specs[i] for i in order], grid=base.grid, shapes=dict(base.shapes),
                    dtype=base.dtype, config=dict(cfg), default=cfg,
                    info={**base.info, "ops": [n.op for n in group.nodes], "rules": list(group.rules),
                          "fused": True, "space": space,
                          **({"block_n_multiple": int(sums[0].attrs["tile"])} if sums else {})},
                    extra={**base.extra, **({"PAIR": True} if pair else {}),
                           **({"ROPE": rope[1] // 2} if rope else {})},
                    scheme=scheme, aten=aten)
    return k, values


class DequantMatmul:
    """The "aten" backend of a qmatmul group (see the module doc). Positions refer to the kernel's arguments."""

    def __init__(self, node, scheme, group, n_operands, out_pos, epilogue, epi_args, residual=None,
                 donate=False):
        self.scheme, self.group, self.n_operands = scheme, group, n_operands
        self.has_zeros, self.has_bias = scheme == "int4_weight_only", node.inputs[-1] is not None  # (bias last)
        self.out_shape = node.out.type.shape
        self.out_pos, self.epilogue, self.epi_args = out_pos, epilogue, epi_args
        self.residual = residual  # (r's position, the sum's position): `addmm(r, x, w.t())`, no epilogue
        # (output, input) positions when the sum may take r's buffer (Kernel.donation; the runtime checks r is
        # dead): then an in-place addmm_, not ATen's copy of r into a fresh output before the GEMM
        self.donation = (residual[1], residual[0]) if residual is not None and donate else None
        self.packed: dict = {}  # the weight in the CUTLASS mixed-input GEMM's layout (quant/kernels.py)

    def kernels(self) -> list:
        """The generated epilogue this plan launches (the dequantize kernel compiles at its first launch)."""
        return [self.epilogue] if self.epilogue is not None else []

    def run(self, tensors: list) -> None:
        from ..quant.kernels import dequant_matmul

        x, w, s = tensors[:3]
        z = tensors[3] if self.has_zeros else None
        b = tensors[self.n_operands - 1] if self.has_bias else None
        x2, N = x.reshape(-1, x.shape[-1]), w.shape[0]
        if self.residual is not None:  # (in place when the runtime gave the sum r's own buffer)
            r, out = (tensors[i].view(-1, N) for i in self.residual)
            dequant_matmul(self.scheme, x2, w, s, z, self.group, out=out, residual=r, cache=self.packed)
            return
        out = tensors[self.out_pos].view(-1, N) if self.out_pos is not None else None
        r = dequant_matmul(self.scheme, x2, w, s, z, self.group, bias=b, out=out, cache=self.packed)
        if self.epilogue is not None:
            r = r.view(self.out_shape)
            self.epilogue.launch([r if i is None else tensors[i] for i in self.epi_args])


def aten_plan(group, node, scheme, gsize, n_operands, values, outputs, name) -> DequantMatmul | None:
    """The qmatmul group's "aten" backend, or None when its epilogue cannot be generated on its own."""
    pos = {id(v): i for i, v in enumerate(values)}
    out_pos = pos.get(id(node.out)) if any(v is node.out for v in outputs) else None
    if out_pos is not None and values[out_pos].type.strides != tuple(contiguous_strides(node.out.type.shape)):
        return None
    rest = [n for n in group.nodes if n is not node]
    epi_outs = [v for v in outputs if v is not node.out]
    found = residual_add(node, rest, outputs, values, {id(n) for n in group.nodes}) \
        if node.inputs[-1] is None else None  # (a bias already takes addmm's added operand)
    if found is not None and id(found[0]) in pos and found[0].type.is_contiguous:
        r, total = found
        donate = r.type.shape == total.type.shape and r.type.strides == total.type.strides and r is not node.inputs[0]
        return DequantMatmul(node, scheme, gsize, n_operands, None, None, [], (pos[id(r)], pos[id(total)]),
                             donate)
    epilogue, epi_args = None, []
    if epi_outs:
        try:
            epilogue, epi_values = pointwise_kernel(Group("pointwise", rest, node.out.type.shape), epi_outs,
                                                    f"{name}_epilogue"[:60])
        except Unsupported:
            return None
        if any(v is not node.out and id(v) not in pos for v in epi_values):
            return None
        epilogue.config = dict(epilogue.default)
        epi_args = [None if v is node.out else pos[id(v)] for v in epi_values]
    return DequantMatmul(node, scheme, gsize, n_operands, out_pos, epilogue, epi_args)
