"""Helpers for checking compiled results against eager: tolerances by dtype, seeded inputs."""
from __future__ import annotations

import torch

# (rtol, atol) per dtype, as DESIGN.md states: float32 ~1e-5 relative, tf32 ~3e-4, bf16/fp16 ~1e-2.
TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


def tolerance(dtype: torch.dtype, scale: float = 1.0) -> tuple[float, float]:
    rtol, atol = TOLERANCES.get(dtype, (0.0, 0.0))
    return rtol * scale, atol * scale


def assert_close(actual, expected, scale: float = 1.0, msg: str = "") -> None:
    """Compare (nested) outputs with the tolerance of the expected dtype; exact for ints and bools."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), \
            f"{msg}: structure differs: {type(actual).__name__} vs {type(expected).__name__}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, scale, f"{msg}[{i}]")
        return
    if hasattr(expected, "to_tuple"):  # HF ModelOutput
        return assert_close(actual.to_tuple(), expected.to_tuple(), scale, msg)
    if not isinstance(expected, torch.Tensor):
        assert actual == expected, f"{msg}: {actual!r} != {expected!r}"
        return
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{msg}: dtype {actual.dtype} != {expected.dtype}"
    rtol, atol = tolerance(expected.dtype, scale)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{msg}: {m}")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=torch.float32, seed: int | None = None, gen: torch.Generator | None = None):
    gen = gen or seeded(seed if seed is not None else 0)
    return torch.randn(*shape, generator=gen).to(dtype)


def gpu_profile(fn, n: int = 10) -> list[tuple[str, float]]:
    """(kernel name, mean µs per call) of the GPU kernels one call of fn launches, largest first (CUDA only).
    Their sum is the call's GPU time, free of the CPU's launch cost."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / n) for e in prof.key_averages() if e.device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])
