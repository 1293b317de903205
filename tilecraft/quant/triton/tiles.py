"""Tile bookkeeping shared by the quantized-matmul kernels (imported by their static sources, as bits.py is):
which output tile and K range a program owns, and the split-K bias and store of the GEMV and fp8 GEMM. Triton
inlines jit helpers, so each kernel compiles to the same code as with these lines written in it."""
import triton
import triton.language as tl


@triton.jit
def gemm_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Program `pid`'s [BLOCK_M, BLOCK_N] output tile (the M blocks of one N block are adjacent programs, for
    weight reuse in L2): (offs_m, offs_n, m_ok, n_ok)."""
    grid_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % grid_m
    pid_n = pid // grid_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < M, offs_n < N


@triton.jit
def split_k_range(pid_k, K, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr):
    """Split `pid_k`'s K range [k_start, k_end): whole BLOCK_K chunks per split (the last may be shorter or
    empty)."""
    k_per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_start = pid_k * k_per
    return k_start, tl.minimum(K, k_start + k_per)


@triton.jit
def add_bias_once(acc, b_ptr, offs_n, n_ok, pid_k, HAS_BIAS: tl.constexpr):
    """acc [BLOCK_M, BLOCK_N] plus the bias row, added by split 0 only (the splits' sums are added atomically)."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        acc += tl.where(pid_k == 0, 1.0, 0.0) * bias[None, :]
    return acc


@triton.jit
def store_or_add(out_ptr, acc, offs_m, offs_n, m_ok, n_ok, stride_om, SPLIT_K: tl.constexpr):
    """Write the tile: a store in out's dtype with one split, else an atomic add into a float32 `out`."""
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    o_ok = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_ok)
    else:
        tl.atomic_add(out_ptrs, acc, mask=o_ok)


@triton.jit
def prefetch_rows_l2(w_ptr, rows, row_bytes, b0, b1):
    """Ask L2 for bytes [b0, b1) of each weight row `rows` (int32 [R]) of a row-major byte matrix: one
    `prefetch.global.L2` per 128-byte line, nothing waits for them. A quantized GEMM issues them before its
    grid-dependency wait, so its weights stream in while the previous kernel still runs (PDL). GPU only (PTX)."""
    base = w_ptr.to(tl.pointer_type(tl.int8)) + rows.to(tl.int64)[:, None] * row_bytes
    for off in range(b0, b1, 512):
        offs = tl.minimum(off + tl.arange(0, 4)[None, :] * 128, b1 - 1)
        tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n mov.u32 $0, 0;", "=r,l", [base + offs],
                                  dtype=tl.int32, is_pure=False, pack=1)
