"""Dequantize a whole int8/int4 weight [N, K] into a float matrix (the activation dtype): the first step of
the quantized matmul's "aten" backend (then cuBLAS), for large M where a tensor-core GEMM library wins.
Grid: (cdiv(N, BLOCK_N), cdiv(K, BLOCK_K)). int4: BLOCK_K divides the group size, so a tile lies inside one
group and its scales and zero points are one value per row (loaded as [BLOCK_N] vectors, not gathered per
element: that gather made this kernel 5x its memory floor)."""
import triton
import triton.language as tl

from tilecraft.quant.triton.bits import i8f, u4f, unpack8


@triton.jit
def dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, BITS: tl.constexpr, GROUP: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    n_ok = offs_n < N
    ok = n_ok[:, None] & (offs_k < K)[None, :]
    if BITS == 8:
        q = i8f(tl.load(w_ptr + offs_n[:, None] * K + offs_k[None, :], mask=ok, other=0))
        w = q * tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[:, None]
    else:
        WORDS: tl.constexpr = BLOCK_K // 8
        offs_w = tl.program_id(1) * WORDS + tl.arange(0, WORDS)
        words = tl.load(w_ptr.to(tl.pointer_type(tl.int32)) + offs_n[:, None] * (K // 8) + offs_w[None, :],
                        mask=n_ok[:, None] & (offs_w < K // 8)[None, :], other=0)
        q = u4f(unpack8(words, BLOCK_N, WORDS))
        g = offs_n * (K // GROUP) + (tl.program_id(1) * BLOCK_K) // GROUP  # the tile's group, per row
        s = tl.load(s_ptr + g, mask=n_ok, other=0.0).to(tl.float32)
        z = tl.load(z_ptr + g, mask=n_ok, other=0).to(tl.float32)
        w = (q - z[:, None]) * s[:, None]
    tl.store(out_ptr + offs_n[:, None] * K + offs_k[None, :], w.to(out_ptr.dtype.element_ty), mask=ok)
