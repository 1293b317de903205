"""Two sibling GEMMs on one activation (SwiGLU's gate and up, attention's q/k/v) as two cuBLAS calls, one call on
a row-concatenated weight, or one strided-batched call (bmm over a stacked [2, N, K] copy, and over the view that
aliases the weights where they lie, codegen.matmul.stacked_alias, with the CUDA-event times compile's choice
measures): GPU time of the GEMMs alone by the torch profiler (median of rounds). Wave quantization decides: 4096x5632 in 128x256 tiles is 704 tiles,
5.3 waves of 132 SMs; the concatenated 11264 columns are 10.7 waves.

    python bench/sibling_gemm_probe.py            # GPU; prints a table, writes --out JSON
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tilecraft.codegen.matmul import elapsed_ms, stacked_alias  # noqa: E402
from tilecraft.testing import gpu_profile  # noqa: E402

# name: (M, K, [N of each sibling])
CASES = {
    "anchor_swiglu_gate_up": (4096, 2048, [5632, 5632]),
    "llama_b4_gate_up": (2048, 2048, [5632, 5632]),
    "llama_b4_qkv": (2048, 2048, [2048, 512, 512]),
    "gpt2_b8_qkv": (4096, 768, [768, 768, 768]),
    "qwen2_gate_up": (2048, 1024, [2816, 2816]),
    "llama_b1_gate_up": (16, 2048, [5632, 5632]),
}


def gpu_us(fn, rounds: int = 5) -> float:
    return statistics.median(sum(us for _, us in gpu_profile(fn, 10)) for _ in range(rounds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results/sibling_gemm_probe.json")
    args = ap.parse_args(argv)
    dev, dt = "cuda", torch.bfloat16
    rows = []
    for name, (M, K, ns) in CASES.items():
        x = torch.randn(M, K, device=dev, dtype=dt)
        ws = [torch.randn(n, K, device=dev, dtype=dt) * 0.02 for n in ns]
        cat = torch.cat(ws)
        row = {"case": name, "M": M, "K": K, "N": ns,
               "separate_us": gpu_us(lambda: [x @ w.t() for w in ws]),
               "concat_us": gpu_us(lambda: x @ cat.t())}
        if len(set(ns)) == 1:
            stacked = torch.stack(ws)
            xb = x.expand(len(ns), M, K)
            row["bmm_us"] = gpu_us(lambda: torch.bmm(xb, stacked.transpose(1, 2)))
            alias = stacked_alias([w.t() for w in ws])  # what compile runs: the weights where they lie
            if alias is not None:
                row["bmm_alias_us"] = gpu_us(lambda: torch.bmm(xb, alias[1]))
                batched = lambda: torch.bmm(xb, alias[1])  # noqa: E731
                row["events_batched_us"] = 1e3 * sorted(elapsed_ms(batched, x.device) for _ in range(5))[2]
                row["events_separate_us"] = 1e3 * sorted(elapsed_ms(lambda: [x @ w.t() for w in ws], x.device)
                                                         for _ in range(5))[2]
            ref = torch.cat([x @ w.t() for w in ws], 1)
            row["bmm_ok"] = bool(torch.equal(torch.bmm(xb, stacked.transpose(1, 2)).transpose(0, 1).reshape(M, -1),
                                             ref))
        row["concat_ok"] = bool(torch.equal(x @ cat.t(), torch.cat([x @ w.t() for w in ws], 1)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print(f"\n{'case':24s} {'separate us':>12s} {'concat us':>10s} {'bmm us':>8s} {'aliased':>8s}  concat/separate")
    nan = float("nan")
    for r in rows:
        print(f"{r['case']:24s} {r['separate_us']:12.1f} {r['concat_us']:10.1f} {r.get('bmm_us', nan):8.1f} "
              f"{r.get('bmm_alias_us', nan):8.1f}  {r['concat_us'] / r['separate_us']:.3f}")
    print("(GPU time by the torch profiler; 'aliased': the batched call over a view of the weights where they lie, "
          "as compile runs it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
