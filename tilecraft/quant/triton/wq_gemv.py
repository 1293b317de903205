"""Weight-only quantized GEMV for decode (the default at M = 1; up to M = 16 it runs too, for the tuner): each
program owns BLOCK_N outputs for all M rows and walks its K range in BLOCK_K chunks, dequantizing the weight
chunk in registers (never a float weight in memory).
Grid: (cdiv(N, BLOCK_N), SPLIT_K). With SPLIT_K > 1, partial sums are atomically added into a float32 `out`.

int4 layout trick: byte j of a weight row holds k = 2j (low nibble) and k = 2j + 1 (high nibble). The chunk's
[BLOCK_N, BLOCK_K/2] bytes are loaded once; `tl.join(lo, hi)` -> [BLOCK_N, BLOCK_K/2, 2] puts each pair side by
side and `tl.reshape` -> [BLOCK_N, BLOCK_K] is then K order (element [n, 2j + p] is nibble p of byte j), with no
data movement (the pair stays in one thread). So activation rows are contiguous loads, as for int8 (no stride-2
gathers), and each row is one product-sum over the chunk. Zero points stay out of the inner product:
sum_k x (q - z) s = s (sum_k x q - z sum_k x), per group; a chunk may span several whole groups (BLOCK_K > GROUP:
reduce per group, then scale) or lie inside one (BLOCK_K <= GROUP)."""
import triton
import triton.language as tl

from tilecraft.quant.triton.bits import i8f as _i8f, u4f as _u4f
from tilecraft.quant.triton.tiles import add_bias_once, split_k_range, store_or_add


@triton.jit
def wq_gemv_kernel(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                   BITS: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    m_ok = offs_m < M
    k_start, k_end = split_k_range(pid_k, K, BLOCK_K, SPLIT_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BITS == 8 and BLOCK_M == 1:  # one row: a [BLOCK_N, BLOCK_K] accumulator, reduced once after the loop
        acc2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0,
                        eviction_policy="evict_first")  # streamed once: keep L2 for x
            x = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            acc2 += _i8f(w) * x[None, :]
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = (tl.sum(acc2, axis=1) * scale)[None, :]
    elif BITS == 8:
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            w = _i8f(tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :],
                             other=0))
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0).to(tl.float32)
            acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        NG: tl.constexpr = BLOCK_K // GROUP if BLOCK_K > GROUP else 1  # groups per chunk
        GS: tl.constexpr = BLOCK_K // NG  # K values of one group inside the chunk
        NGROUPS = K // GROUP
        acc_t = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)  # transposed: rows of the weight tile
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            offs_b = k0 // 2 + tl.arange(0, HALF)
            if BLOCK_K <= GROUP:  # BLOCK_K | GROUP | K: no chunk crosses k_end, so no K mask (vectorized loads)
                k_ok = tl.full([BLOCK_K], 1, tl.int1)
                b_ok = tl.full([HALF], 1, tl.int1)
            else:
                k_ok = offs_k < k_end
                b_ok = offs_b < k_end // 2
            # the weight chunk: one [BLOCK_N, HALF] byte load, unpacked into K-ordered [BLOCK_N, BLOCK_K] codes
            packed = tl.load(w_ptr + offs_n[:, None] * (K // 2) + offs_b[None, :],
                             mask=n_ok[:, None] & b_ok[None, :], other=0, eviction_policy="evict_first").to(tl.int32)
            lo = _u4f(packed & 15)
            hi = _u4f((packed >> 4) & 15)
            q = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))
            gs = k0 // GROUP + tl.arange(0, NG)
            gm = n_ok[:, None] & (gs[None, :] < NGROUPS)
            s = tl.load(s_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=gm, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=gm, other=0).to(tl.float32)
            # one activation row at a time: a 2-D [BLOCK_N, BLOCK_K] product keeps the weight tile in the layout
            # it was loaded in (a 3-D [BLOCK_M, BLOCK_N, BLOCK_K] broadcast makes Triton reshuffle it)
            for mi in tl.static_range(BLOCK_M):
                xr = tl.load(x_ptr + mi * stride_xm + offs_k, mask=k_ok & (mi < M), other=0.0).to(tl.float32)
                p = tl.sum(tl.reshape(q * xr[None, :], (BLOCK_N, NG, GS)), axis=2)  # [BLOCK_N, NG]: sum x*q
                sx = tl.sum(tl.reshape(xr, (NG, GS)), axis=1)  # [NG]: sum x per group
                part = tl.sum((p - sx[None, :] * z) * s, axis=1)  # [BLOCK_N]
                acc_t += tl.where(offs_m[None, :] == mi, part[:, None], 0.0)
        acc = tl.trans(acc_t)
    acc = add_bias_once(acc, b_ptr, offs_n, n_ok, pid_k, HAS_BIAS)
    # EPILOGUE (codegen's qmatmul template replaces the rest with its fused ops and their stores)
    store_or_add(out_ptr, acc, offs_m, offs_n, m_ok, n_ok, stride_om, SPLIT_K)
