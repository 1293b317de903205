"""The matmul template: a grouped-ordering tiled GEMM (batched for bmm) with a fused pointwise epilogue.

Operands are loaded through their real strides, so a transposed or permuted operand costs no copy. The
epilogue (bias, activation, residual, scaling, cast) is applied to the fp32 accumulator before the one store.
"""
from __future__ import annotations

import torch

from ..ir import Value
from ..passes.fusion import Group, is_matmul
from .emit import Args, Emitter, Unsupported, header, interpreting, needs_int64, store
from .kernel import Kernel


def _parts(mm):
    """(A, B, bias, alpha, beta) of a matmul node."""
    if mm.op == "addmm":
        bias, A, B = mm.inputs
        return A, B, bias, mm.attrs.get("alpha", 1), mm.attrs.get("beta", 1)
    A, B = mm.inputs
    return A, B, None, 1, 1


def matmul_kernel(group: Group, outputs: list[Value], name: str):
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
    for acc in accs:
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

    def acc_value(acc, bias, alpha, beta):
        def value(idx):
            if tuple(idx) != canon:
                raise Unsupported("matmul result read at another index")
            e = acc if alpha == 1 else f"{acc} * {alpha!r}"
            if bias is not None:
                lead = out.rank - bias.type.rank
                bi = tuple("0" if s == 1 else canon[j + lead] for j, s in enumerate(bias.type.shape))
                bv = em.value(bias, bi)
                e = f"{e} + {bv}" if beta == 1 else f"{e} + {bv} * {beta!r}"
            return em.tmp(e)
        return value

    for acc, node in zip(accs, mms):
        em.special[id(node.out)] = acc_value(acc, *_parts(node)[2:])
    for v in outputs:
        store(em, v, canon)
    src = header(name, args, ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]) + "\n".join(em.lines) + "\n"
    cfg = default_config(M, N, Kd, dt, dual=dual)
    k = Kernel(name, "matmul", src, name, list(args.specs),
               grid=lambda c: (-(-M // c["BLOCK_M"]) * -(-N // c["BLOCK_N"]), BT),
               shapes={"B": BT, "M": M, "N": N, "K": Kd, **({"G": 2} if dual else {})}, dtype=dt,
               config=dict(cfg), default=dict(cfg),
               info={"ops": [n.op for n in group.nodes], "rules": list(group.rules)})
    return k, list(args.values)


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
