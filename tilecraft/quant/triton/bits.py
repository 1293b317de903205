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
