"""GPU time of a workload's generated reduction kernels (LayerNorm, add + LayerNorm, ...) over XBLOCK x num_warps,
each kernel launched alone on its own arguments (torch profiler, median of rounds): is the default config the
best one for these rows?

    python bench/reduction_sweep.py block_b8_t1024_d1024      # an anchors.py workload (GPU)
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import anchors  # noqa: E402

import tilecraft  # noqa: E402
from tilecraft.testing import gpu_profile  # noqa: E402

CONFIGS = [(1, 2), (1, 4), (1, 8), (2, 4), (2, 8), (4, 4), (4, 8), (8, 8)]  # (XBLOCK, num_warps)


def main(names: list[str]) -> int:
    for w in anchors.workloads(False):
        if w[0] not in names:
            continue
        name, make, inputs, dtype = w[:4]
        torch.manual_seed(0)
        m = make().cuda().to(dtype).eval()
        xs = [x.cuda().to(dtype) if x.is_floating_point() else x.cuda() for x in inputs()]
        c = tilecraft.compile(m, cuda_graphs=False)
        with torch.no_grad():
            c(*xs)
        for k in [k for g in c.report.graphs for k in g.kernels if k.template == "reduction"]:
            args = k.make_args("cuda")
            row = []
            for xb, warps in CONFIGS:
                cfg = {**k.config, "XBLOCK": xb, "num_warps": warps}
                try:
                    k.launch(args, cfg)
                    us = statistics.median(sum(t for _, t in gpu_profile(lambda: k.launch(args, cfg), 20))
                                           for _ in range(3))
                except Exception as e:  # noqa: BLE001 - a config that does not compile is reported
                    row.append(f"{xb}x{warps}: {type(e).__name__}")
                    continue
                row.append(f"{xb}x{warps} {us:.1f}")
            print(f"{name} {k.name} {k.shapes} default XBLOCK={k.config['XBLOCK']} warps={k.config['num_warps']}:"
                  f" {' | '.join(row)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
