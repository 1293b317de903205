"""fp8 (e4m3) GEMM for Hopper: tl.dot on float8 tiles of the activation (quantized at run time) and the weight,
scaled by the activation's per-row (or per-tensor) and the weight's per-row (or per-tensor) scales.
Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N), SPLIT_K)."""
import triton
import triton.language as tl

from tilecraft.quant.triton.tiles import add_bias_once, gemm_tile, split_k_range, store_or_add


@triton.jit
def fp8_gemm_kernel(x_ptr, w_ptr, xs_ptr, ws_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                    X_PER_ROW: tl.constexpr, W_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m, offs_n, m_ok, n_ok = gemm_tile(pid, M, N, BLOCK_M, BLOCK_N)
    k_start, k_end = split_k_range(pid_k, K, BLOCK_K, SPLIT_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_end
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :],
                    other=0.0)
        w = tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.dot(x, tl.trans(w))
    if X_PER_ROW:
        xs = tl.load(xs_ptr + offs_m, mask=m_ok, other=0.0)
    else:
        xs = tl.load(xs_ptr + offs_m * 0)
    if W_PER_ROW:
        ws = tl.load(ws_ptr + offs_n, mask=n_ok, other=0.0)
    else:
        ws = tl.load(ws_ptr + offs_n * 0)
    acc = acc * xs[:, None] * ws[None, :]
    acc = add_bias_once(acc, b_ptr, offs_n, n_ok, pid_k, HAS_BIAS)
    store_or_add(out_ptr, acc, offs_m, offs_n, m_ok, n_ok, stride_om, SPLIT_K)
