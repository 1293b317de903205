"""Static Triton sources of the quantized-linear kernels (loaded through the kernel cache)."""
