"""The matmul template: a grouped-ordering tiled GEMM (batched for bmm) with a fused pointwise epilogue.

Operands are loaded through their real strides, so a transposed or permuted operand costs no copy. The
epilogue (bias, activation, residual, scaling, cast) is applied to the fp32 accumulator before the one store.

Every matmul kernel has a second backend, chosen by its config's `BACKEND` knob: `"aten"` runs the matmul(s)
through ATen (cuBLAS on CUDA; `addmm`'s bias in cuBLASLt's epilogue) and the rest of the group as one generated
pointwise kernel afterwards, as Inductor's default does. It exists when the operands are kernel arguments seen
through views (no fused prologue). The default is ATen on a GPU (cuBLAS beats the grouped template at mid
sizes) and Triton in the interpreter; the schedule database overrides both (`tilecraft tune` times both).
"""
from __future__ import annotations

import torch

from ..ir import Value
from ..ir.interpreter import run_node
from ..ir import base_value
from ..passes.fusion import Group, is_matmul
from .emit import Args, Emitter, Unsupported, header, interpreting, ir_comment, needs_int64, store
from .kernel import LAUNCH_KEYS, Kernel
from .pointwise import pointwise_kernel

BACKENDS = ("triton", "aten")


def _parts(mm):
    """(A, B, bias, alpha, beta) of a matmul node."""
    if mm.op == "addmm":
        bias, A, B = mm.inputs
        return A, B, bias, mm.attrs.get("alpha", 1), mm.attrs.get("beta", 1)
    A, B = mm.inputs
    return A, B, None, 1, 1


def matmul_kernel(group: Group, outputs: list[Value], name: str, options=None):
    # a "matmul-dual" group holds two matmuls with the same A: one K loop loads each A tile once for both dots
    mms = [n for n in group.nodes if is_matmul(n)]
    mm, dual = mms[0], len(mms) == 2
    A = _parts(mm)[0]
    batched = mm.op == "bmm"
    out = mm.out.type
    M, N = out.shape[-2], out.shape[-1]
    Kd = A.type.shape[-1]
    BT = out.shape[0] if batched else 1
    dt = A.type.dtype
    accs = ["acc_a", "acc_b"] if dual else ["acc"]
    args = Args()
    for v in outputs:
        args.store(v)
    args.name_as(A, "a")
    for i, node in enumerate(mms):
        args.name_as(_parts(node)[1], f"b{i}" if dual else "b")
        args.name_as(_parts(node)[2], "bias")
    em = Emitter(group.nodes, args, "omask")
    em.zero = "om * 0 + on * 0"
    wide = needs_int64(args, BT * M * N) or needs_int64(args, M * Kd * BT)
    em.scalars.update(("pid", "pid_b", "num_pid_m", "num_pid_n", "width", "first_m", "size_m", "pid_m", "pid_n",
                       "k0"))
    em.line("pid = tl.program_id(0)")
    if batched:
        em.line("pid_b = tl.program_id(1)")
    em.line(f"num_pid_m = tl.cdiv({M}, BLOCK_M)")
    em.line(f"num_pid_n = tl.cdiv({N}, BLOCK_N)")
    em.line("width = GROUP_M * num_pid_n")
    em.line("first_m = (pid // width) * GROUP_M")
    em.line("size_m = tl.minimum(num_pid_m - first_m, GROUP_M)")
    em.line("pid_m = first_m + ((pid % width) % size_m)")
    em.line("pid_n = (pid % width) // size_m")
    cast = ".to(tl.int64)" if wide else ""
    em.line(f"rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)){cast}")
    em.line(f"rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)){cast}")
    em.line("am = rm[:, None]")
    em.line("bn = rn[None, :]")
    for acc, node in zip(accs, mms):
        em.line(ir_comment(node))
        em.line(f"{acc} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
    em.line(f"for k0 in range(0, {Kd}, BLOCK_K):")
    em.push("amask")
    em.line(f"rk = k0 + tl.arange(0, BLOCK_K){cast}")
    em.line("ak = rk[None, :]")
    em.line("bk = rk[:, None]")
    em.line(f"amask = (am < {M}) & (ak < {Kd})")
    em.line(f"bmask = (bk < {Kd}) & (bn < {N})")
    pb = ("pid_b",) if batched else ()
    upcast = dt == torch.bfloat16 and interpreting()  # the interpreter's bf16 dot is wrong; fp32 is exact here
    a = em.raw_operand(A, pb + ("am", "ak"))
    a = f"{a}.to(tl.float32)" if upcast else a
    em.masks[-1] = "bmask"
    precision = ""
    if dt == torch.float32:
        precision = ', input_precision="tf32"' if torch.backends.cuda.matmul.allow_tf32 else \
            ', input_precision="ieee"'
    for acc, node in zip(accs, mms):
        b = em.raw_operand(_parts(node)[1], pb + ("bk", "bn"))
        b = f"{b}.to(tl.float32)" if upcast else b
        em.line(f"{acc} = tl.dot({a}, {b}, {acc}{precision})")
    em.pop()
    em.line("om = rm[:, None]")
    em.line("on = rn[None, :]")
    em.line(f"omask = (om < {M}) & (on < {N})")
    canon = pb + ("om", "on")

    def acc_value(acc, bias, alpha, beta, op):
        def value(idx):
            if tuple(idx) != canon:
                raise Unsupported("matmul result read at another index")
            e = acc if alpha == 1 else f"{acc} * {alpha!r}"
            if bias is not None:
                lead = out.rank - bias.type.rank
                bi = tuple("0" if s == 1 else canon[j + lead] for j, s in enumerate(bias.type.shape))
                bv = em.value(bias, bi)
                e = f"{e} + {bv}" if beta == 1 else f"{e} + {bv} * {beta!r}"
            return e if e == acc else em.tmp(e, name=op)
        return value

    for acc, node in zip(accs, mms):
        em.special[id(node.out)] = acc_value(acc, *_parts(node)[2:], node.op)
    for v in outputs:
        store(em, v, canon)
    src = header(name, args, ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]) + "\n".join(em.lines) + "\n"
    aten = aten_plan(group, mms, outputs, list(args.values), name)
    backend = choose_backend(aten is not None, getattr(options, "matmul", "auto"), aligned(mms))
    cfg = {**default_config(M, N, Kd, dt, dual=dual), "BACKEND": backend}
    k = MatmulKernel(name, "matmul", src, name, list(args.specs),
                     grid=lambda c: (-(-M // c["BLOCK_M"]) * -(-N // c["BLOCK_N"]), BT),
                     shapes={"B": BT, "M": M, "N": N, "K": Kd, **({"G": 2} if dual else {})}, dtype=dt,
                     config=dict(cfg), default=dict(cfg),
                     info={"ops": [n.op for n in group.nodes], "rules": list(group.rules)}, aten=aten)
    return k, list(args.values)


def choose_backend(aten_ok: bool, option: str, aligned: bool = True) -> str:
    """The default backend of a matmul group: `compile(matmul=...)` when it says "triton" or "aten", else ATen
    (cuBLAS) on a GPU and the generated template in the interpreter, where cuBLAS does not exist and the tests
    exercise the template. A GEMM whose rows are not 16-byte aligned stays generated: cuBLAS falls back to slow
    pre-Hopper kernels there (GPT-2's 50257-word head: 3.4 ms in cuBLAS, 0.61 ms generated, on an H200)."""
    if option not in ("auto",) + BACKENDS:
        raise ValueError(f"tilecraft.compile(matmul={option!r}): expected 'auto', 'triton' or 'aten'")
    if not aten_ok or option == "triton":
        return "triton"
    if option == "aten":
        return "aten"
    return "triton" if interpreting() or not aligned else "aten"


def aligned(mms) -> bool:
    """Is every matmul operand and result 16-byte aligned along its leading dimension (the stride that is not
    1), as cuBLAS's fast kernels need?"""
    for n in mms:
        for v in n.input_values() + [n.out]:
            t = v.type
            if t.rank < 2:
                continue
            s0, s1 = t.strides[-2], t.strides[-1]
            ld = s0 if s1 == 1 or t.shape[-1] == 1 else s1 if s0 == 1 or t.shape[-2] == 1 else None
            if ld is None or (ld * t.dtype.itemsize) % 16:
                return False
    return True


class AtenPlan:
    """How the "aten" backend runs a matmul group: each matmul through ATen on its operands (kernel arguments
    seen through views), then the group's other nodes as one generated pointwise kernel (None when the
    matmul results are all the group stores)."""

    def __init__(self, mms, values: list[Value], epilogue, epi_values: list[Value]):
        pos = {id(v): i for i, v in enumerate(values)}
        self.mms = [(n, [self._chain(x, pos) for x in n.input_values()],
                     pos.get(id(n.out))) for n in mms]
        self.epilogue = epilogue
        mm_ids = {id(n.out): j for j, n in enumerate(mms)}
        # each epilogue argument: ("arg", position in the matmul kernel's args) or ("mm", which matmul)
        self.epi_args = [("mm", mm_ids[id(v)]) if id(v) in mm_ids else ("arg", pos[id(v)]) for v in epi_values]

    @staticmethod
    def _chain(x: Value, pos: dict):
        """(argument position, view nodes from that argument to x, in order)."""
        views = []
        while id(x) not in pos:
            views.append(x.producer)
            x = x.producer.inputs[0]
        return pos[id(x)], views[::-1]

    def run(self, tensors: list) -> None:
        results = []
        for node, operands, out_pos in self.mms:
            ins = []
            for i, views in operands:
                t = tensors[i]
                for v in views:
                    t = run_node(v, {id(v.inputs[0]): t})[0]
                ins.append(t)
            out = tensors[out_pos] if out_pos is not None else None
            if node.op == "addmm":
                r = torch.addmm(*ins, beta=node.attrs.get("beta", 1), alpha=node.attrs.get("alpha", 1), out=out)
            else:
                r = (torch.bmm if node.op == "bmm" else torch.mm)(*ins, out=out)
            results.append(r)
        if self.epilogue is not None:
            self.epilogue.launch([results[i] if kind == "mm" else tensors[i] for kind, i in self.epi_args])


def aten_plan(group: Group, mms, outputs: list[Value], values: list[Value], name: str) -> AtenPlan | None:
    """The "aten" backend of a matmul group, or None when a matmul operand is computed inside the group (a
    fused prologue) or the epilogue cannot be generated on its own."""
    pos = {id(v) for v in values}
    in_group = {id(n) for n in group.nodes}
    for n in mms:
        for x in n.input_values():
            b = base_value(x)
            if id(b) not in pos or (b.producer is not None and id(b.producer) in in_group):
                return None
    mm_ids = {id(n) for n in mms}
    rest = [n for n in group.nodes if id(n) not in mm_ids]
    epi_outs = [v for v in outputs if not any(v is n.out for n in mms)]
    if any(n.out.type.shape != mms[0].out.type.shape for n in rest):
        return None  # a prologue node of another shape
    epilogue, epi_values = None, []
    if epi_outs:
        try:
            epilogue, epi_values = pointwise_kernel(Group("pointwise", rest, mms[0].out.type.shape), epi_outs,
                                                    f"{name}_epilogue"[:60])
        except Unsupported:
            return None
        mm_outs = {id(n.out) for n in mms}
        if any(id(v) not in pos and id(v) not in mm_outs for v in epi_values):
            return None
        epilogue.config = dict(epilogue.default)
    return AtenPlan(mms, values, epilogue, epi_values)


class MatmulKernel(Kernel):
    """A matmul group's kernel: the generated GEMM, or (config `BACKEND: "aten"`) its ATen plan."""

    def __init__(self, *a, aten: AtenPlan | None = None, **kw):
        super().__init__(*a, **kw)
        self.aten = aten

    def make_plan(self, config: dict) -> tuple:
        consts = {k: v for k, v in config.items() if k not in LAUNCH_KEYS and k != "BACKEND"}
        opts = {k: v for k, v in config.items() if k in LAUNCH_KEYS}
        return consts, opts, self.grid(config)

    def launch(self, args: list, config: dict | None = None) -> None:
        cfg = self.config if config is None else config
        if cfg.get("BACKEND") == "aten":
            if self.aten is None:
                raise Unsupported(f"kernel {self.name} has no ATen backend (a matmul operand is computed in it)")
            self.aten.run(args)
            return
        super().launch(args, config)

    def __getstate__(self):
        return {**super().__getstate__(), "aten": None}


def default_config(M: int, N: int, K: int, dtype, dual: bool = False) -> dict:
    """A reasonable tile for the shape (the tuner replaces it with a measured one). Measured on an H100
    (bench/tune_gemm.py): 128x256x64, 8 warps, 3 stages is the best of the space for large fp16/bf16 GEMMs
    (0.95-1.02x cuBLAS at 4096^3 and 8192^3; 128x128 reached 0.76-0.84x). Small M (decode, GEMV-like) is
    memory-bound: narrow N tiles give enough programs to fill the SMs, and long K tiles keep loads in flight.
    `dual`: the kernel holds two accumulators (a "matmul-dual" group), so the widest tile is halved."""
    half = dtype in (torch.float16, torch.bfloat16)
    if M <= 64:
        bm = 16 if M <= 16 else 32 if M <= 32 else 64
        bn = 32 if N <= 32 or N < 64 * 256 else 64
        bk = min(128 if half else 64, max(32, 1 << (max(K, 1) - 1).bit_length()))
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    if half and M * N >= 2**24 and N >= 256 and K >= 64:  # dual: two 128x256 fp32 accumulators would spill
        return {"BLOCK_M": 128, "BLOCK_N": 128 if dual else 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                "num_stages": 3}
    bm = 64 if M * N <= 2**20 else 128
    bn = 32 if N <= 32 else 64 if N <= 64 or M * N <= 2**20 else 128
    bk = 32 if K <= 32 or dtype == torch.float32 else 64
    big = bm * bn >= 128 * 128
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": 8 if big else 4,
            "num_stages": 3}
