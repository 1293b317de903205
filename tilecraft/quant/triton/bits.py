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
