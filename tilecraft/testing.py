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


def compile_and_check(fn, *inputs, n_kernels=None, templates=None, scale=1.0) -> list:
    """Compile fn, check against eager on these inputs, return the kernels of its (single) graph; optionally
    check how many kernels there are and of which templates, and that none fell back to torch."""
    import tilecraft

    c = tilecraft.compile(fn)
    with torch.no_grad():
        got = c(*inputs)
        expected = fn(*inputs)
    assert_close(got, expected, scale=scale)
    graphs = c.report.graphs
    assert len(graphs) == 1 and graphs[0].error is None, c.report.summary()
    kernels = graphs[0].kernels
    if n_kernels is not None:
        assert len(kernels) == n_kernels, c.report.summary()
    if templates is not None:
        assert sorted(k.template for k in kernels) == sorted(templates), c.report.summary()
    steps = graphs[0].program.steps
    assert not any(getattr(s, "failed", False) for s in steps), "a kernel failed and fell back to torch"
    return kernels


def assert_matmul_configs_agree(k, seed):
    """Tiles smaller and larger than the default give the same result (ragged-edge masks)."""
    args = k.make_args(seed=seed)
    ref = [a.clone() for a in args]
    k.launch(ref, k.default_config())
    for cfg in ({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1},
                {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 4}):
        out = [a.clone() for a in args]
        k.launch(out, {**k.default_config(), **cfg})
        for i in k.out_positions:
            assert_close(out[i], ref[i])  # by the output's dtype: summation order differs with BLOCK_K


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=torch.float32, seed: int | None = None, gen: torch.Generator | None = None):
    gen = gen or seeded(seed if seed is not None else 0)
    return torch.randn(*shape, generator=gen).to(dtype)


def gpu_profile(fn, n: int = 10, counts: bool = False) -> list[tuple]:
    """(kernel name, mean µs per call) of the GPU kernels one call of fn launches, largest first (CUDA only).
    Their sum is the call's GPU time, free of the CPU's launch cost. `counts`: a third field, how many times
    per call the kernel (or memset, copy) ran."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / n) + ((e.count / n,) if counts else ())
            for e in prof.key_averages() if e.device_time_total > 0]
    return sorted(rows, key=lambda r: -r[1])


def gpu_span_ms(fn, n: int = 5) -> float:
    """GPU ms per call from the start of a call's first kernel to the end of its last, gaps between kernels
    included (CUDA only): CUDA events around n calls queued while the GPU sleeps, so the host's launch cost stays
    out. Unlike the sum of kernel times (gpu_profile) it counts the idle gaps between kernels and gives credit
    for kernels that overlap (programmatic dependent launch)."""
    import time

    from tilecraft.codegen.matmul import elapsed_ms

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    host_s = time.perf_counter() - t0  # the sleep must outlast queueing n calls
    return elapsed_ms(fn, torch.device("cuda"), n, sleep_s=min(0.25, 2 * n * host_s + 1e-3))


def interleaved_rounds(fns: list, rounds: int, measure) -> list[list]:
    """measure(fn) for every fn, `rounds` times, in forward order then reversed, ...: per fn its results in round
    order. On a GPU the same kernels measure 2-4% apart by position alone (the one measured after a long run of
    another meets a warmer, slower-clocked device), so benchmarks compare medians of such rounds."""
    got = [[] for _ in fns]
    for r in range(rounds):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            got[i].append(measure(fns[i]))
    return got
