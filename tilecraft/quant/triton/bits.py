"""Bit tricks shared by the quantized kernels (imported by their static sources)."""
import triton
import triton.language as tl


@triton.jit
def u4f(q):
    """Codes 0..15 (int32) -> float32 without an int-to-float conversion (a quarter-rate instruction): the
    bits of 2^23 + q, minus 2^23."""
    return (q | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0


@triton.jit
def i8f(q):
    """int8 -> float32 the same way: the bits of 2^23 + 128 + q, minus 2^23 + 128."""
    return (q.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0


@triton.jit
def unpack8(words, R: tl.constexpr, W: tl.constexpr):
    """int32 words [R, W] -> int32 codes [R, 8 W] in K order (element 8w + i is nibble i of word w)."""
    n0 = words & 15
    n1 = (words >> 4) & 15
    n2 = (words >> 8) & 15
    n3 = (words >> 12) & 15
    n4 = (words >> 16) & 15
    n5 = (words >> 20) & 15
    n6 = (words >> 24) & 15
    n7 = (words >> 28) & 15
    # q[r, w, c, d, e] = nibble 4c + 2d + e: the innermost join pairs nibbles 4 apart, the outermost 1 apart
    q = tl.join(tl.join(tl.join(n0, n4), tl.join(n2, n6)), tl.join(tl.join(n1, n5), tl.join(n3, n7)))
    return tl.reshape(q, (R, 8 * W))


@triton.jit
def unpack8_half(words, R: tl.constexpr, W: tl.constexpr, dt: tl.constexpr):
    """int32 words [R, W] -> [R, 8 W] values BASE + code in the 16-bit float `dt`, in K order as `unpack8`
    (bfloat16: BASE 128, float16: 1024; both exact). Built as bit patterns two codes at a time: masking a word
    with 0x000F000F keeps nibbles i and i + 4 (shifted down by 4i) in its two halves, and OR-ing the exponent
    bits of BASE into each half makes them the 16-bit floats BASE + code: about one integer operation per
    weight, no conversions (`unpack8` + `u4f` + a float conversion take about six)."""
    if dt == tl.bfloat16:
        magic: tl.constexpr = 0x43004300  # bfloat16 128.0 = 0x4300 in each half
    else:
        magic: tl.constexpr = 0x64006400  # float16 1024.0 = 0x6400
    t0 = (words & 0x000F000F) | magic
    t1 = ((words >> 4) & 0x000F000F) | magic
    t2 = ((words >> 8) & 0x000F000F) | magic
    t3 = ((words >> 12) & 0x000F000F) | magic
    q = tl.join(tl.join(tl.join(t0.to(tl.int16), (t0 >> 16).to(tl.int16)),
                        tl.join(t2.to(tl.int16), (t2 >> 16).to(tl.int16))),
                tl.join(tl.join(t1.to(tl.int16), (t1 >> 16).to(tl.int16)),
                        tl.join(t3.to(tl.int16), (t3 >> 16).to(tl.int16))))
    return tl.reshape(q, (R, 8 * W)).to(dt, bitcast=True)


@triton.jit
def unpack8_pairs_asm(words, zz, R: tl.constexpr, W: tl.constexpr, dt: tl.constexpr):
    """GPU only (PTX). int32 words [R, W] (nibble p = code 8w + p) and zz [R] int32 (the 16-bit float BASE + z in
    both halves) -> [R, 8 W] values q - z in `dt` (bfloat16 BASE 128 / float16 BASE 1024), K order. Per word:
    one shift, then per pair of K neighbours one PRMT (byte i of w and of w >> 4: codes 2i and 2i + 1 in the
    two halves), one LOP3 (mask, OR BASE's exponent bits) and one packed 16-bit subtract."""
    if dt == tl.bfloat16:
        SUB: tl.constexpr = "sub.rn.bf16x2"
    else:
        SUB: tl.constexpr = "sub.rn.f16x2"
    t0, t1, t2, t3 = tl.inline_asm_elementwise(
        "{ .reg .b32 s, m, a; shr.b32 s, $4, 4; and.b32 m, $5, 0xFFF0FFF0;"
        " prmt.b32 a, $4, s, 0x0400; lop3.b32 a, a, 0x000F000F, m, 0xEA; " + SUB + " $0, a, $5;"
        " prmt.b32 a, $4, s, 0x1511; lop3.b32 a, a, 0x000F000F, m, 0xEA; " + SUB + " $1, a, $5;"
        " prmt.b32 a, $4, s, 0x2622; lop3.b32 a, a, 0x000F000F, m, 0xEA; " + SUB + " $2, a, $5;"
        " prmt.b32 a, $4, s, 0x3733; lop3.b32 a, a, 0x000F000F, m, 0xEA; " + SUB + " $3, a, $5; }",
        "=r,=r,=r,=r,r,r", [words, zz[:, None]], dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True,
        pack=1)
    lo = tl.join(tl.join(t0.to(tl.int16), t2.to(tl.int16)), tl.join(t1.to(tl.int16), t3.to(tl.int16)))
    hi = tl.join(tl.join((t0 >> 16).to(tl.int16), (t2 >> 16).to(tl.int16)),
                 tl.join((t1 >> 16).to(tl.int16), (t3 >> 16).to(tl.int16)))
    return tl.reshape(tl.join(lo, hi), (R, 8 * W)).to(dt, bitcast=True)


@triton.jit
def dequant8_pairs_asm(words, zz, ss, dt: tl.constexpr):
    """GPU only (PTX). int32 words [R, W] (nibble p = code 8w + p), zz [R] int32 (the 16-bit float BASE + z in both
    halves, as unpack8_pairs_asm) and ss [R] int32 (the scale in `dt` in both halves) -> int32 [R, 4 W], each the
    two `dt` values (q - z) * s of K neighbours 2j, 2j + 1 (element 4w + i: codes 8w + 2i, 8w + 2i + 1): a row of
    K values stored as 32-bit pairs. Per pair a PRMT, a LOP3, a packed subtract (exact) and a packed multiply
    (rounded once, the scale already rounded to `dt`); the pairs are joined within each thread."""
    if dt == tl.bfloat16:
        SUB: tl.constexpr = "sub.rn.bf16x2"
        MUL: tl.constexpr = "mul.rn.bf16x2"
    else:
        SUB: tl.constexpr = "sub.rn.f16x2"
        MUL: tl.constexpr = "mul.rn.f16x2"
    t0, t1, t2, t3 = tl.inline_asm_elementwise(
        "{ .reg .b32 s, m, a; shr.b32 s, $4, 4; and.b32 m, $5, 0xFFF0FFF0;"
        " prmt.b32 a, $4, s, 0x0400; lop3.b32 a, a, 0x000F000F, m, 0xEA; "
        + SUB + " a, a, $5; " + MUL + " $0, a, $6;"
        " prmt.b32 a, $4, s, 0x1511; lop3.b32 a, a, 0x000F000F, m, 0xEA; "
        + SUB + " a, a, $5; " + MUL + " $1, a, $6;"
        " prmt.b32 a, $4, s, 0x2622; lop3.b32 a, a, 0x000F000F, m, 0xEA; "
        + SUB + " a, a, $5; " + MUL + " $2, a, $6;"
        " prmt.b32 a, $4, s, 0x3733; lop3.b32 a, a, 0x000F000F, m, 0xEA; "
        + SUB + " a, a, $5; " + MUL + " $3, a, $6; }",
        "=r,=r,=r,=r,r,r,r", [words, zz[:, None], ss[:, None]], dtype=(tl.int32, tl.int32, tl.int32, tl.int32),
        is_pure=True, pack=1)
    R: tl.constexpr = words.shape[0]
    W: tl.constexpr = words.shape[1]
    return tl.reshape(tl.join(tl.join(t0, t2), tl.join(t1, t3)), (R, 4 * W))
