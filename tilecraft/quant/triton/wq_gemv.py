"""Weight-only quantized GEMV for decode (M <= 16): each program owns BLOCK_N outputs for all M rows and walks
its K range in BLOCK_K chunks, dequantizing the weight chunk in registers (never a float weight in memory).
Grid: (cdiv(N, BLOCK_N), SPLIT_K). With SPLIT_K > 1, partial sums are atomically added into a float32 `out`."""
import triton
import triton.language as tl


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
    k_per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * k_per
    k_end = tl.minimum(K, k_start + k_per)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BITS == 8 and BLOCK_M == 1:  # one row: a [BLOCK_N, BLOCK_K] accumulator, reduced once after the loop
        acc2 = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0)
            x = tl.load(x_ptr + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            acc2 += w.to(tl.float32) * x[None, :]
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = (tl.sum(acc2, axis=1) * scale)[None, :]
    elif BITS == 8:
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :],
                        other=0).to(tl.float32)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0).to(tl.float32)
            acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        K2 = K // 2
        NGROUPS = K // GROUP
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_j = tl.arange(0, HALF)
            offs_b = k0 // 2 + offs_j
            b_ok = offs_b < k_end // 2
            packed = tl.load(w_ptr + offs_n[:, None] * K2 + offs_b[None, :], mask=n_ok[:, None] & b_ok[None, :],
                             other=0).to(tl.int32)
            lo = (packed & 15).to(tl.float32)
            hi = ((packed >> 4) & 15).to(tl.float32)
            xm = m_ok[:, None] & b_ok[None, :]
            xe = tl.load(x_ptr + offs_m[:, None] * stride_xm + 2 * offs_b[None, :], mask=xm, other=0.0).to(tl.float32)
            xo = tl.load(x_ptr + offs_m[:, None] * stride_xm + 2 * offs_b[None, :] + 1, mask=xm,
                         other=0.0).to(tl.float32)
            if BLOCK_K <= GROUP:  # the whole chunk lies in one group: one scale/zero per output
                g = k0 // GROUP
                g_ok = n_ok & (g < NGROUPS)
                s = tl.load(s_ptr + offs_n * NGROUPS + g, mask=g_ok, other=0.0).to(tl.float32)
                z = tl.load(z_ptr + offs_n * NGROUPS + g, mask=g_ok, other=0).to(tl.float32)
                p = tl.sum(xe[:, None, :] * lo[None, :, :] + xo[:, None, :] * hi[None, :, :], axis=2)
                sx = tl.sum(xe + xo, axis=1)
                acc += (p - sx[:, None] * z[None, :]) * s[None, :]
            else:  # BLOCK_K // GROUP groups per chunk
                NG: tl.constexpr = BLOCK_K // GROUP
                GH: tl.constexpr = GROUP // 2
                gs = k0 // GROUP + tl.arange(0, NG)
                gm = n_ok[:, None] & (gs[None, :] < NGROUPS)
                s = tl.load(s_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=gm, other=0.0).to(tl.float32)
                z = tl.load(z_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=gm, other=0).to(tl.float32)
                prod = xe[:, None, :] * lo[None, :, :] + xo[:, None, :] * hi[None, :, :]
                p = tl.sum(tl.reshape(prod, (BLOCK_M, BLOCK_N, NG, GH)), axis=3)
                sx = tl.sum(tl.reshape(xe + xo, (BLOCK_M, NG, GH)), axis=2)
                acc += tl.sum((p - sx[:, None, :] * z[None, :, :]) * s[None, :, :], axis=2)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += tl.where(pid_k == 0, 1.0, 0.0) * bias[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    o_ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_ok)
    else:
        tl.atomic_add(out_ptrs, acc, mask=o_ok)
