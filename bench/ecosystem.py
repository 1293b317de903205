"""The PyTorch-ecosystem paths on a GPU: dynamic shapes, max-autotune, the backend by name with options and modes.

    python bench/ecosystem.py --out eco.json      # H100/H200: ~2-3 minutes
    python bench/ecosystem.py --dry-run           # CPU: tiny block, Triton interpreter, simulated tuning

Checks, each against eager (bf16 tolerance on the GPU):
 1. `tilecraft.compile(block, dynamic=True)` over 4 (batch, tokens) shapes: one Dynamo compile, one tilecraft
    compile per shape; first-call and steady ms per shape;
 2. the same with `cuda_graphs=True` (each shape's program replays its own CUDA graph);
 3. `mode="max-autotune"` into an empty schedule DB: the first call tunes the kernels within `--autotune-s`;
    the records must not be flagged simulated; steady ms against the default configs;
 4. `torch.compile(block, backend="tilecraft", options={"cuda_graphs": True})` and `mode="reduce-overhead"`.
Prints a table and writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, Triton interpreter")
    p.add_argument("--autotune-s", type=float, default=None, help="max-autotune time budget (default 60; dry 20)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dry = args.dry_run
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    import tilecraft
    from tilecraft.models import TransformerBlock
    from tilecraft.testing import assert_close
    from tilecraft.tuner import ScheduleDB

    torch.manual_seed(0)
    device, dt = ("cpu", torch.float32) if dry else ("cuda", torch.bfloat16)
    d, heads = (32, 4) if dry else (1024, 16)
    shapes = [(2, 8), (3, 12), (4, 8), (2, 10)] if dry else [(2, 128), (4, 256), (8, 512), (3, 384)]
    model = TransformerBlock(d=d, heads=heads).eval().to(device, dt)
    inputs = {s: torch.randn(*s, d, device=device, dtype=dt) for s in shapes}
    scale = 1.0 if dry else 3.0  # bf16: a block of matmuls and norms
    results: dict = {"device": torch.cuda.get_device_name() if not dry else "cpu (interpreter)", "rows": []}

    def ms(fn, reps=1 if dry else 20) -> float:
        if not dry:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if not dry:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3 / reps

    def check(name: str, compiled, report=None, **extra) -> None:
        row = {"case": name, **extra, "shapes": []}
        with torch.no_grad():
            for s, x in inputs.items():
                t0 = time.perf_counter()
                got = compiled(x)
                first = time.perf_counter() - t0
                assert_close(got, model(x), scale=scale, msg=f"{name} {s}")
                row["shapes"].append({"shape": list(s), "first_call_s": round(first, 3),
                                      "ms": round(ms(lambda: compiled(x)), 4)})
        if report is not None:
            row["dynamo_graphs"] = report.dynamo_graphs
            row["tilecraft_graphs"] = len(report.graphs)
            row["fallbacks"] = sorted({f for r in report.graphs for f in r.fallbacks})
        results["rows"].append(row)
        print(f"{name}: ok " + json.dumps({k: v for k, v in row.items() if k not in ("case", "shapes")}))

    c = tilecraft.compile(model, dynamic=True)
    check("dynamic=True", c, c.report)
    assert c.report.dynamo_graphs == 1, c.report.dynamo_graphs
    if not dry:
        c = tilecraft.compile(model, dynamic=True, cuda_graphs=True)
        check("dynamic=True cuda_graphs", c, c.report)

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "s.sqlite")
        budget = args.autotune_s or (20.0 if dry else 60.0)
        torch._dynamo.reset()
        c = tilecraft.compile(model, mode="max-autotune", schedules=db, autotune_seconds=budget)
        x = inputs[shapes[-1]]
        t0 = time.perf_counter()
        with torch.no_grad():
            assert_close(c(x), model(x), scale=scale, msg="max-autotune")
        tune_s = time.perf_counter() - t0
        kernels = [k for r in c.report.graphs for k in r.kernels]
        with ScheduleDB(db) as s:
            recs = s.all()
        sources = sorted({k.info.get("config_source") for k in kernels})
        simulated = sum(r.simulated for r in recs)
        torch._dynamo.reset()
        base = tilecraft.compile(model)
        with torch.no_grad():
            base(x)
            tuned_ms, default_ms = ms(lambda: c(x)), ms(lambda: base(x))
        row = {"case": "max-autotune", "first_call_s": round(tune_s, 1), "budget_s": budget,
               "kernels": len(kernels), "records": len(recs), "simulated_records": simulated,
               "config_sources": sources, "tuned_ms": round(tuned_ms, 4), "default_ms": round(default_ms, 4)}
        results["rows"].append(row)
        print("max-autotune: ok " + json.dumps(row))
        assert dry or simulated == 0, "GPU tuning stored simulated records"

    torch._dynamo.reset()
    check("backend options={cuda_graphs: True}",
          torch.compile(model, backend="tilecraft", options={"cuda_graphs": not dry}))
    torch._dynamo.reset()
    check("backend mode=reduce-overhead", torch.compile(model, backend="tilecraft", mode="reduce-overhead"))

    print(f"\n{'case':<40} {'shape':<12} {'first call s':>12} {'ms':>10}")
    for row in results["rows"]:
        for s in row.get("shapes", []):
            print(f"{row['case']:<40} {str(tuple(s['shape'])):<12} {s['first_call_s']:>12.3f} {s['ms']:>10.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
