"""Weight-only quantized GEMM for prefill: tl.dot on tiles whose weight operand is dequantized on load.
int8: dot(x, q) then the per-channel scale. int4: a BLOCK_K chunk lies inside one group (BLOCK_K <= GROUP), so
dot(x, q - z) (exact small integers as dot operands) is scaled per group in float32.
Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K); M blocks of one N block are adjacent (weight reuse).

int4 layout trick: byte j of a weight row holds k = 2j (low nibble) and k = 2j + 1 (high nibble). The chunk's
bytes are loaded once as [BLOCK_N, BLOCK_K/2] (the stored row order); `tl.join(lo, hi)` -> [BLOCK_N, BLOCK_K/2, 2]
puts each pair side by side, `tl.reshape` -> [BLOCK_N, BLOCK_K] is then K order, and `tl.trans` gives the
[BLOCK_K, BLOCK_N] B operand. So the activations are one contiguous [BLOCK_M, BLOCK_K] load, as for int8, and
each chunk is ONE tl.dot with the full BLOCK_K (not two half-K dots on stride-2 gathers of x).
SCALE_W (a tunable int4 knob): scale the weight tile before the dot instead of scaling each dot's result, so
the dot accumulates in place (no per-chunk float32 rescale of the tile, fewer registers: 108 vs 162 per thread
for a 64x64x64 fp16 tile on sm_90) at the cost of rounding (q - z) * s to the activation dtype once, as a
dequantize-then-matmul would."""
import triton
import triton.language as tl


@triton.jit
def wq_gemm_kernel(x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                   BITS: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, DOT_F32: tl.constexpr,
                   IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   SPLIT_K: tl.constexpr, SCALE_W: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    grid_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % grid_m
    pid_n = pid // grid_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    k_per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * k_per
    k_end = tl.minimum(K, k_start + k_per)
    if DOT_F32:
        dt = tl.float32
    else:
        dt = x_ptr.dtype.element_ty
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BITS == 8:
        for k0 in range(k_start, k_end, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < k_end
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                        other=0.0).to(dt)
            w = tl.load(w_ptr + offs_n[None, :] * K + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None],
                        other=0).to(dt)
            if IEEE:
                acc += tl.dot(x, w, input_precision="ieee")
            else:
                acc += tl.dot(x, w)
        scale = tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
    else:
        HALF: tl.constexpr = BLOCK_K // 2
        PREC: tl.constexpr = "ieee" if IEEE else "tf32"  # (tf32 only matters for float32 operands)
        NGROUPS = K // GROUP
        NG: tl.constexpr = BLOCK_K // GROUP if BLOCK_K > GROUP else 1  # groups per chunk (> 1 needs SCALE_W)
        for k0 in range(k_start, k_end, BLOCK_K):  # BLOCK_K divides K (checked): no ragged chunk
            offs_k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None],
                        other=0.0).to(dt)
            # the weight chunk: [BLOCK_N, HALF] bytes, rows contiguous in memory as stored
            offs_b = k0 // 2 + tl.arange(0, HALF)
            packed = tl.load(w_ptr + offs_n[:, None] * (K // 2) + offs_b[None, :], mask=n_ok[:, None],
                             other=0).to(tl.int32)
            if NG > 1:  # several groups per chunk: each byte's group scale and zero, broadcast from [BLOCK_N, NG]
                gs = k0 // GROUP + tl.arange(0, NG)
                sg = tl.load(s_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=n_ok[:, None], other=0.0)
                zg = tl.load(z_ptr + offs_n[:, None] * NGROUPS + gs[None, :], mask=n_ok[:, None], other=0)
                sb = tl.reshape(tl.broadcast_to(sg.to(tl.float32)[:, :, None], (BLOCK_N, NG, GROUP // 2)),
                                (BLOCK_N, HALF))
                zb = tl.reshape(tl.broadcast_to(zg.to(tl.float32)[:, :, None], (BLOCK_N, NG, GROUP // 2)),
                                (BLOCK_N, HALF))
                lo = (((packed & 15).to(tl.float32) - zb) * sb).to(dt)
                hi = ((((packed >> 4) & 15).to(tl.float32) - zb) * sb).to(dt)
                w = tl.trans(tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K)))
                acc = tl.dot(x, w, acc, input_precision=PREC)
            else:  # the chunk lies inside one group
                g = k0 // GROUP
                g_ok = n_ok & (g < NGROUPS)
                s = tl.load(s_ptr + offs_n * NGROUPS + g, mask=g_ok, other=0.0).to(tl.float32)
                z = tl.load(z_ptr + offs_n * NGROUPS + g, mask=g_ok, other=0).to(tl.int32)
                if SCALE_W:  # w = (q - z) * s rounded once to the dot dtype; the dot then accumulates in place
                    lo = (((packed & 15) - z[:, None]).to(tl.float32) * s[:, None]).to(dt)
                    hi = ((((packed >> 4) & 15) - z[:, None]).to(tl.float32) * s[:, None]).to(dt)
                else:  # exact small integers -15..15 in the dot dtype; the group scale goes on the dot's result
                    lo = ((packed & 15) - z[:, None]).to(dt)
                    hi = (((packed >> 4) & 15) - z[:, None]).to(dt)
                # (converted before the join, so the join/reshape/trans move 16-bit values)
                w = tl.trans(tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K)))  # [BLOCK_K, BLOCK_N], K order
                if SCALE_W:
                    acc = tl.dot(x, w, acc, input_precision=PREC)
                else:
                    acc += tl.dot(x, w, input_precision=PREC) * s[None, :]
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += tl.where(pid_k == 0, 1.0, 0.0) * bias[None, :]
    # EPILOGUE (codegen's qmatmul template replaces the rest with its fused ops and their stores)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    o_ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_ok)
    else:
        tl.atomic_add(out_ptrs, acc, mask=o_ok)
