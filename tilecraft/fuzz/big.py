"""Models past 2^31 elements (GPU only): generated kernels must use 64-bit index arithmetic.

A few fixed shapes, each just over 2^31 elements in one tensor: a pointwise epilogue with a broadcast bias, a
row sum, a softmax and a GEMM whose A operand is that large. Inputs are drawn on the device (a CPU draw of 2^31
float64 numbers would take a minute); the reference is the same program run eagerly in float64 on the device,
and the verdict uses the oracle's calibrated comparison and fallback check.
"""
from __future__ import annotations

import json
import os
import time

import torch

from .oracle import OUTCOMES, compare, fell_back_message

R, N = (1 << 21) + 3, 1024  # R * N > 2^31


def _pointwise(x, b):
    return torch.relu(x * 2.0 + b)


def _row_sum(x, b):
    return (x + b).sum(-1)


def _softmax(x, b):
    return torch.softmax(x * 0.5 + b, -1)


def _gemm(x, b):
    return torch.mm(x, b[:, None].expand(N, 16)) * 0.01


CASES = [_pointwise, _row_sum, _softmax, _gemm]


def run_big(out: str, device: str, seed: int, n: int) -> list[dict]:
    """Check n big models (cycling CASES over float16 and bfloat16); write DIR/big.json; return the records."""
    import tilecraft

    if not device.startswith("cuda") and R * N > 2**31:  # (tests shrink R to run this on the CPU)
        print("tilecraft fuzz --big: models past 2^31 elements run on CUDA only; skipped")
        return []
    recs = []
    for i in range(n):
        fn, dtype = CASES[i % len(CASES)], (torch.float16, torch.bfloat16)[(i // len(CASES)) % 2]
        g = torch.Generator(device).manual_seed(seed * 1000 + i)
        x = torch.randn(R, N, generator=g, device=device).to(dtype)
        b = torch.randn(N, generator=g, device=device).to(dtype)
        t0 = time.perf_counter()
        torch._dynamo.reset()
        rec = {"i": i, "case": fn.__name__, "dtype": str(dtype), "numel": R * N}
        try:
            with torch.no_grad():
                eager = fn(x, b)
                ref = fn(x.double(), b.double())
                compiled = tilecraft.compile(fn)
                got = compiled(x, b)
            status, msg, err = "ok", "", 0.0
            chunk = 1 << 26  # compare in slices: float64 copies of a whole 2^31-element output would not fit
            for j in range(0, got.numel(), chunk):
                status, msg, e = compare([got.reshape(-1)[j:j + chunk]], [eager.reshape(-1)[j:j + chunk]],
                                         [ref.reshape(-1)[j:j + chunk]])
                err = max(err, e)
                if status != "ok":
                    break
            fell = compiled.report.fell_back()
            if status == "ok" and fell:
                status, (_, msg) = "fell_back", fell_back_message(fell)
        except Exception as e:  # noqa: BLE001 - a crash is a verdict
            status, msg, err = "runtime_crash", f"{type(e).__name__}: {e}", 0.0
        rec.update(status=status, outcome=OUTCOMES[status], message=msg[:500], max_error=err,
                   seconds=round(time.perf_counter() - t0, 2))
        print(f"big {i}: {fn.__name__} {dtype} {R}x{N}: {rec['outcome']} {msg[:200]}")
        recs.append(rec)
        del x, b
        torch.cuda.empty_cache()
    with open(os.path.join(out, "big.json"), "w") as f:
        json.dump(recs, f, indent=1)
    return recs
