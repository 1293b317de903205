"""Host time per kernel launch: the lean wrapper (compiler/wrapper.py) against the step-by-step runtime.

    python bench/launch_overhead.py [--models tiny,llama_b1] [--out bench/results/launch_overhead.json]
    python bench/launch_overhead.py --dry-run      # tiny configs on the CPU (Triton interpreter, times meaningless)

Models (bf16 on CUDA, eval, no_grad, use_cache=False, CUDA graphs off so every call launches every step):
  tiny      a 2-layer LLaMA with d=32 at batch 1 x 16: many small kernels, GPU work negligible
  llama_b1  LLaMA-style 492M (8 layers, d=2048) at batch 1 x 16 (bench/models.py's llama_b1)
Per model and path: wall µs per call of the compiled model (Dynamo guards and AOT wrapper included), and of
its programs alone (each KernelProgram.run on the flat arguments it got), back-to-back calls synchronized at the
ends (median of 5 loops), divided by the steps launched (generated kernels plus ops run through torch) for µs
per launch. Both paths run the same compiled program (the wrapper switched off and on), and their outputs are
checked to be equal. The table is printed last, after one line of JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("TILECRAFT_LEAN_LAUNCH", "1")  # the lean path is opt-in; this bench measures it
import torch  # noqa: E402

import tilecraft  # noqa: E402
from models import MODELS, build  # noqa: E402

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[+{time.perf_counter() - T0:5.1f}s] {msg}", flush=True)


def loop_us(fn, cuda: bool) -> float:
    """Wall µs per call of back-to-back calls (about 0.3 s a loop), synchronized at the ends: median of 5 loops
    (one call when dry)."""
    times, n = [], 1
    if cuda:
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        n = max(10, min(200, int(0.3 / max(time.perf_counter() - t0, 1e-6))))
    for _ in range(1 if not cuda else 5):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def bench(name: str, dry: bool, dev: str) -> list[dict]:
    cuda = dev == "cuda"
    if name == "tiny":
        model, ids, _ = build("llama_b1", True, dev)
        ids = ids[:, :8] if dry else torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(1)).to(dev)
    else:
        model, ids, _ = build(name, dry, dev)
    if cuda:
        model = model.to(torch.bfloat16)
    c = tilecraft.compile(model, cuda_graphs=False)
    seen = []  # (program, flat args) of every program call in one model call
    with torch.no_grad():
        t0 = time.perf_counter()
        c(input_ids=ids)  # compile, and the first (plain) run that the wrapper is generated after
        log(f"{name}: compiled in {time.perf_counter() - t0:.1f}s")
        progs = [g.program for g in c.report.graphs if hasattr(g.program, "run_steps")]
        for p in progs:
            p.run = (lambda p, f: lambda *a: seen.append((p, a)) or f(*a))(p, p.run)
        c(input_ids=ids)
        for p in progs:
            del p.run
        lean = {id(p): p._lean for p in progs}
        if not all(lean.values()):
            raise RuntimeError(f"{name}: a program has no lean wrapper (TILECRAFT_LEAN_LAUNCH=0, or it failed: "
                               "see the warnings above)")
        steps = sum(len(p.steps) for p, _ in seen)
        kernels = sum(1 for p, _ in seen for s in p.steps if hasattr(s, "kernel") and not s.failed)

        def use(on: bool):
            for p in progs:
                p._lean = lean[id(p)] if on else None

        outs, rows = {}, []
        for path in ("steps", "lean"):
            use(path == "lean")
            outs[path] = c(input_ids=ids)[0].float()
            call = loop_us(lambda: c(input_ids=ids), cuda)
            progs_only = loop_us(lambda: [p.run(*a) for p, a in seen], cuda)
            rows.append({"model": name, "path": path, "programs": len(seen), "steps": steps, "kernels": kernels,
                         "call_us": round(call, 1), "programs_us": round(progs_only, 1),
                         "us_per_launch": round(progs_only / steps, 2),
                         "call_us_per_launch": round(call / steps, 2)})
            log(f"{name} {path}: {rows[-1]}")
        use(True)
        if not torch.equal(outs["lean"], outs["steps"]):
            raise RuntimeError(f"{name}: the lean wrapper's output differs from the step-by-step path")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,llama_b1")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dev = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    rows = []
    for name in args.models.split(","):
        if name != "tiny" and name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; known: tiny, {', '.join(MODELS)}")
        rows += bench(name, args.dry_run, dev)
    meta = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (dry run)", "dry_run": args.dry_run,
            "torch": torch.__version__, "seconds": round(time.perf_counter() - T0, 1)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(json.dumps({"meta": meta, "rows": rows}))
    print(f"\nhost µs per launch, CUDA graphs off ({meta['device']}"
          + ("; DRY RUN: CPU interpreter, times meaningless)" if args.dry_run else ")"))
    print(f"{'model':10} {'path':6} {'progs':>5} {'steps':>5} {'kernels':>7} {'call µs':>9} {'progs µs':>9}"
          f" {'µs/launch':>9} {'call µs/launch':>14}")
    for r in rows:
        print(f"{r['model']:10} {r['path']:6} {r['programs']:5} {r['steps']:5} {r['kernels']:7} {r['call_us']:9.1f}"
              f" {r['programs_us']:9.1f} {r['us_per_launch']:9.2f} {r['call_us_per_launch']:14.2f}")
    for m in dict.fromkeys(r["model"] for r in rows):
        s, l = (next(r for r in rows if r["model"] == m and r["path"] == p) for p in ("steps", "lean"))
        print(f"{m}: lean/steps per launch {l['us_per_launch'] / s['us_per_launch']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
