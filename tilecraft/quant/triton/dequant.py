"""Dequantize a whole int8/int4 weight [N, K] into a float matrix (the activation dtype): the first step of
the quantized matmul's "aten" backend (then cuBLAS), for large M where a tensor-core GEMM library wins.
Grid: (cdiv(N, BLOCK_N), cdiv(K, BLOCK_K)). int4: BLOCK_K divides the group size, so a tile lies inside one
group and its scales and zero points are one value per row (loaded as [BLOCK_N] vectors, not gathered per
element: that gather made this kernel 5x its memory floor). ASM (int4 into float16, or bfloat16 on sm_90+): the codes
become q - z pairs in inline PTX (bits.py: dequant8_pairs_asm), times the scale in packed 16-bit arithmetic (the
scale rounded to the output dtype first, then the product: twice rounded, as wq_gemm's BF16 path), each register
a pair of K neighbours stored as one 32-bit word: about two instructions per weight instead of six (unpack, float
conversion, float32 arithmetic, rounding) and no shared-memory round trip to the store's layout."""
import triton
import triton.language as tl

from tilecraft.quant.triton.bits import dequant8_pairs_asm, i8f, u4f, unpack8


@triton.jit
def dequant_kernel(w_ptr, s_ptr, z_ptr, out_ptr, N, K, BITS: tl.constexpr, GROUP: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ASM: tl.constexpr = False):
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
        g = offs_n * (K // GROUP) + (tl.program_id(1) * BLOCK_K) // GROUP  # the tile's group, per row
        s = tl.load(s_ptr + g, mask=n_ok, other=0.0).to(tl.float32)
        if ASM:  # 32-bit pairs of K neighbours, stored as such
            dt: tl.constexpr = out_ptr.dtype.element_ty
            MAGIC: tl.constexpr = 0x43004300 if dt == tl.bfloat16 else 0x64006400  # BASE + z in both halves
            zi = tl.load(z_ptr + g, mask=n_ok, other=0).to(tl.int32)
            si = s.to(dt).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
            pairs = dequant8_pairs_asm(words, zi | (zi << 16) | MAGIC, si | (si << 16), dt)
            offs_p = tl.program_id(1) * (BLOCK_K // 2) + tl.arange(0, BLOCK_K // 2)
            tl.store(out_ptr.to(tl.pointer_type(tl.int32)) + offs_n[:, None] * (K // 2) + offs_p[None, :], pairs,
                     mask=n_ok[:, None] & (offs_p < K // 2)[None, :])
            return
        q = u4f(unpack8(words, BLOCK_N, WORDS))
        z = tl.load(z_ptr + g, mask=n_ok, other=0).to(tl.float32)
        w = (q - z[:, None]) * s[:, None]
    tl.store(out_ptr + offs_n[:, None] * K + offs_k[None, :], w.to(out_ptr.dtype.element_ty), mask=ok)
