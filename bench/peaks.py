"""The device's copy bandwidth and bf16 matmul rate, measured in the run that uses them.

The benches compute floors (bytes / bandwidth, FLOPs / matmul rate) from these numbers instead of hard-coded
peaks of one GPU (H100 peaks made an H200 show "130% of the floor"). Measured once per process, ~1 s:
- bandwidth: a device-to-device copy of a 1 GiB tensor, bytes read + written / median time (the ANCHORS method);
- matmul rate: a bf16 8192 x 8192 x 8192 torch.matmul (cuBLAS), 2*8192^3 / median time.
Without CUDA (--dry-run) the same is measured on the CPU with small sizes (float32): the code paths run, the
numbers only describe the CPU.
"""
from __future__ import annotations

import functools
import time


def _median_s(fn, reps: int) -> float:
    import torch

    fn()
    ts = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]


@functools.lru_cache(maxsize=None)
def measure(cuda: bool = True) -> dict:
    """{"bandwidth": bytes/s, "flops": FLOP/s, "device": name, "how": text}; `cuda=False` measures the CPU."""
    import torch

    if cuda and torch.cuda.is_available():
        from triton.testing import do_bench

        src = torch.empty(2**29, dtype=torch.bfloat16, device="cuda")  # 1 GiB
        dst = torch.empty_like(src)
        copy_s = do_bench(lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median") / 1e3
        nbytes = 2 * src.numel() * src.element_size()
        del src, dst
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        mm_s = do_bench(lambda: a @ b, warmup=10, rep=100, return_mode="median") / 1e3
        del a, b
        torch.cuda.empty_cache()
        return {"bandwidth": nbytes / copy_s, "flops": 2 * n**3 / mm_s, "device": torch.cuda.get_device_name(),
                "how": "1 GiB device copy (read+write bytes), bf16 8192^3 matmul; do_bench medians"}
    src = torch.empty(2**22)  # 16 MiB float32
    dst = torch.empty_like(src)
    copy_s = _median_s(lambda: dst.copy_(src), 5)
    n = 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm_s = _median_s(lambda: a @ b, 5)
    return {"bandwidth": 2 * src.numel() * 4 / copy_s, "flops": 2 * n**3 / mm_s, "device": "cpu",
            "how": "CPU: 16 MiB copy, float32 256^3 matmul (describes the CPU, not a GPU)"}


def describe(p: dict) -> str:
    return (f"measured peaks on {p['device']}: copy {p['bandwidth'] / 1e12:.3g} TB/s, "
            f"matmul {p['flops'] / 1e12:.3g} TFLOP/s")


def floor_ms(nbytes: float, flops: float, p: dict) -> float:
    """The least time the work can take on this device: bytes / bandwidth or FLOPs / matmul rate, the larger."""
    return max(nbytes / p["bandwidth"], flops / p["flops"]) * 1e3
