"""A GEMM timing sweep on the GPU: cost-model training data and a check of the space's pruning rules.

    python bench/gemm_sweep.py --budget-s 420 --out bench/results/h200/gemm_sweep.json   # one H200: < 8 min
    python bench/gemm_sweep.py --dry-run --out /tmp/sweep.json                           # CPU: interpreter, tiny

For each shape (shared/ANCHORS.md "Tiling matters" plus the model linears), the kernel tilecraft emits for
`a @ b` (--kernel codegen; --kernel reference: the tuner's grouped GEMM with SPLIT_K) is first checked against
torch.matmul, then `--configs` configs drawn from its config space (the tuner's, pruning rules applied) plus
`--rejected` configs the rules remove (to check that no rule removes a fast config) are timed with the tuner's
GPUMeasurer (cold L2, each output checked against the default config's). Configs are compiled first in
`--workers` processes (Triton's compile holds the GIL, so threads would not overlap it), and measured round-robin
over the shapes so a budget cut still leaves every shape covered. Records (cost_model.load_records reads the file)
are written after every round. bench/eval_cost_model.py scores the cost model and the search strategies on it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# shared/ANCHORS.md "Tiling matters" (8) + the model linears (4): M, N, K
SHAPES = [(8192, 8192, 8192), (4096, 4096, 4096), (1024, 1024, 1024), (16, 4096, 4096), (128, 4096, 11008),
          (2048, 5632, 2048), (512, 512, 8192), (3000, 1000, 700),
          (4096, 768, 2304), (4096, 3072, 768), (2048, 2048, 5632), (2048, 5632, 2048)]
DRY_SHAPES = [(32, 32, 64), (16, 64, 64), (64, 32, 32)]


def unique(shapes):
    return list(dict.fromkeys(tuple(s) for s in shapes))


def draw_configs(space, default: dict, n: int, n_rejected: int, seed: int) -> list[tuple[dict, str | None]]:
    """(config, rule verdict): the default first, then n valid configs and n_rejected configs the rules remove,
    shuffled together."""
    from tilecraft.tuner.spaces import config_key

    rng = random.Random(seed)
    valid = space.enumerate()
    picked = [default] + [c for c in rng.sample(valid, min(n, len(valid))) if c != default]
    seen = {config_key(c) for c in picked}
    out = [(c, space.why_invalid(c)) for c in picked]
    for _ in range(200 * max(1, n_rejected)):
        if sum(r is not None for _, r in out[1:]) >= n_rejected:
            break
        c = space._complete({k: rng.choice(v) for k, v in space.knobs.items()})
        why = space.rule(c)
        if why is not None and config_key(c) not in seen:
            seen.add(config_key(c))
            out.append((c, why))
    rest = out[1:]
    rng.shuffle(rest)  # rejected configs spread over the list, so a budget cut keeps some of them
    return out[:1] + rest


_BUILT: dict = {}  # per compile worker: kernels rebuilt from their recipe


def _compile_job(job) -> int:  # pragma: no cover - runs in a spawned worker on the GPU box
    """Rebuild one kernel from (kind, shape, dtype) in this process (codegen kernels do not pickle) and launch
    the given configs once, filling Triton's on-disk cache; a kernel whose source differs from the parent's
    (another cache key) is skipped."""
    kind, (M, N, K), dtype_name, key, configs, device, matmul = job
    if device == "cuda":
        os.environ.pop("TRITON_INTERPRET", None)
    import torch

    kern = _BUILT.get((kind, M, N, K, dtype_name))
    if kern is None:
        kern = _BUILT[(kind, M, N, K, dtype_name)] = build_kernel(kind, M, N, K, getattr(torch, dtype_name), device,
                                                                  matmul)
    if kern.key != key:
        return 0
    args, ok = kern.make_args(device, 0), 0
    for c in configs:
        try:
            kern.launch(args, c)
            ok += 1
        except Exception:  # out of resources etc.: the measurer records it
            pass
    if device == "cuda":
        torch.cuda.synchronize()
    return ok


def precompile_all(todo, kind: str, dtype_name: str, workers: int, timeout_s: float, device: str = "cuda",
                   matmul: str = "auto") -> int:
    """Compile every (kernel, config) in one pool of spawned processes (Triton's compile holds the GIL, so
    threads would not overlap it); stops waiting after timeout_s (the rest compile on first launch while
    measuring). Returns how many configs compiled (-1: cut by the timeout)."""
    import multiprocessing as mp

    jobs = [(kind, (k.shapes["M"], k.shapes["N"], k.shapes["K"]), dtype_name, k.key, [c for c, _ in cfgs][i::workers],
             device, matmul) for k, cfgs in todo for i in range(workers)]
    pool = mp.get_context("spawn").Pool(workers)
    try:
        return sum(pool.map_async(_compile_job, [j for j in jobs if j[4]], chunksize=1).get(timeout_s))
    except mp.TimeoutError:
        print(f"compile phase cut after {timeout_s:.0f}s", flush=True)
        return -1
    except Exception as e:  # a worker could not build a kernel: configs compile on first launch instead
        print(f"parallel compile failed ({type(e).__name__}: {e}); compiling while measuring", flush=True)
        return 0
    finally:
        pool.terminate()


def build_kernel(kind: str, M: int, N: int, K: int, dtype, device: str, matmul: str = "auto"):
    """The tuner's reference GEMM, or the kernel tilecraft's codegen emits for `a @ b` (bench/tune_gemm.py)."""
    if kind == "reference":
        from tilecraft.tuner.reference_kernels import ReferenceGemm

        return ReferenceGemm(M, N, K, dtype)
    from tune_gemm import codegen_gemm_kernel

    return codegen_gemm_kernel(M, N, K, dtype, device, matmul)


def triton_config(config: dict) -> dict:
    """The config on the generated-Triton backend (codegen's matmul defaults to ATen/cuBLAS on a GPU)."""
    return {**config, "BACKEND": "triton"} if "BACKEND" in config else dict(config)


def check_against_torch(kernel, device: str, config: dict) -> str | None:
    """None when the config's output matches torch.matmul on fresh inputs; else why not."""
    from tilecraft.tuner.measure import compare_outputs

    args = kernel.make_args(device, 0)
    kernel.launch(args, config)
    a, b = [x for i, x in enumerate(args) if i not in kernel.out_positions][:2]
    want = (a.float() @ b.float()).to(a.dtype)
    return compare_outputs([args[kernel.out_positions[0]].view_as(want)], [want])


def record(kernel, cfg: dict, rule: str | None, m, device_info) -> dict:
    """A cost_model.Record JSON object (plus the rule verdict and the error), without importing XGBoost."""
    return {"template": kernel.template, "shapes": dict(kernel.shapes), "dtype": str(kernel.dtype).replace("torch.", ""),
            "config": dict(cfg), "device": device_info.to_dict(), "time_ms": m.time_ms, "status": m.status,
            "kernel_key": kernel.key, "rule": rule, "error": m.error, "seconds": round(m.seconds, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for the whole sweep")
    p.add_argument("--configs", type=int, default=60, help="valid configs per shape (plus the default)")
    p.add_argument("--rejected", type=int, default=8, help="configs per shape that the pruning rules remove")
    p.add_argument("--kernel", choices=["codegen", "reference"], default="codegen")
    p.add_argument("--matmul", choices=["auto", "aten", "triton"], default="auto",
                   help="compile's matmul option: the codegen kernel's default BACKEND (its ATen plan is timed once)")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--shapes", default=None, help="MxNxK,... (default: the 12 sweep shapes)")
    p.add_argument("--workers", type=int, default=None,
                   help="compile processes (default: up to 16 on the GPU, none in a dry run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gemm_sweep.json"))
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny shapes, interpreter, fake (wall) times")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from tilecraft.tuner.device import PRESETS, DeviceInfo
    from tilecraft.tuner.measure import GPUMeasurer, SimulatedMeasurer
    from tilecraft.tuner.spaces import ConfigSpace, space_for_kernel

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on CPU")
        return 2
    dev = "cpu" if args.dry_run else "cuda"
    info = PRESETS["cpu-interpreter"] if args.dry_run else DeviceInfo.detect()
    dtype = getattr(torch, args.dtype)
    shapes = ([tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes
              else DRY_SHAPES if args.dry_run else unique(SHAPES))
    doc = {"device": info.to_dict(), "kernel": args.kernel, "dtype": args.dtype, "dry_run": args.dry_run,
           "budget_s": args.budget_s, "shapes": [], "records": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        doc["seconds"] = round(time.perf_counter() - t_start, 1)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=0))
        os.replace(tmp, out)

    todo = []  # (kernel, [(config, rule)...])
    for i, (M, N, K) in enumerate(shapes):
        kern = build_kernel(args.kernel, M, N, K, dtype, dev, args.matmul)
        default = triton_config(kern.default_config())
        bad = check_against_torch(kern, dev, default)
        doc["shapes"].append({"shape": [M, N, K], "kernel": getattr(kern, "name", kern.key), "key": kern.key,
                              "default": default, "torch_check": bad or "ok"})
        if bad:
            print(f"{M}x{N}x{K}: default config disagrees with torch.matmul ({bad}); shape skipped", flush=True)
            continue
        space = space_for_kernel(kern, info)
        if "BACKEND" in space.knobs or "BACKEND" in space.fixed:  # sweep the generated kernel; ATen (cuBLAS) is
            knobs = {**space.knobs, **({"BACKEND": ["triton"]} if "BACKEND" in space.knobs else {})}  # timed once
            space = ConfigSpace(space.template, knobs, space.rule, triton_config(space.fixed))
        configs = draw_configs(space, default, args.configs, args.rejected, args.seed + i)
        doc["shapes"][-1].update(space_size=space.size(), drawn=len(configs))
        todo.append((kern, configs))
    print(f"{len(todo)} shapes checked against torch.matmul, {sum(len(c) for _, c in todo)} configs drawn "
          f"({time.perf_counter() - t_start:.0f}s)", flush=True)

    workers = args.workers if args.workers is not None else (1 if args.dry_run else min(16, os.cpu_count() or 1))
    if workers > 1:
        t0 = time.perf_counter()
        left = max(0.0, deadline - t0 - args.budget_s * 0.4)  # keep 40% of the budget for measuring
        done = precompile_all(todo, args.kernel, args.dtype, workers, timeout_s=left, device=dev,
                              matmul=args.matmul)
        print(f"compiled {done} configs in {workers} processes in {time.perf_counter() - t0:.0f}s", flush=True)

    if args.dry_run:  # interpreter: really run and check each config; the "time" is its wall time
        def measurer():
            return SimulatedMeasurer(lambda c: 1.0, run_kernels=True)
    else:
        def measurer():
            return GPUMeasurer(time_limit_s=10.0, reps=10, warmup_ms=2.0, l2_bytes=info.l2_bytes)
    measurers = [measurer() for _ in todo]
    n_rounds = max((len(c) for _, c in todo), default=0)
    stopped = "done"
    for j in range(n_rounds):
        for (kern, configs), meas in zip(todo, measurers):
            if j >= len(configs):
                continue
            if time.perf_counter() > deadline:
                stopped = "budget"
                break
            cfg, rule = configs[j]
            m = meas.measure(kern, cfg)
            if args.dry_run and m.ok:
                m.time_ms = m.seconds * 1e3
            doc["records"].append(record(kern, cfg, rule, m, info))
        if stopped == "budget":
            break
        if j % 8 == 7:
            save()
    for (kern, _), meas, s in zip(todo, measurers, [s for s in doc["shapes"] if s["torch_check"] == "ok"]):
        if kern.default_config().get("BACKEND") == "aten" and time.perf_counter() < deadline + 30:
            m = meas.measure(kern, kern.default_config())  # ATen (cuBLAS) as compile's default runs it
            s["aten_ms"] = m.time_ms if m.ok else None
    doc["stopped"] = stopped
    save()
    recs = doc["records"]
    print(f"\n{'shape':<18} {'measured':>8} {'failed':>6} {'rejected ok':>11} {'best ms':>9} {'default/best':>12} "
          f"{'best rejected/best':>18} {'aten ms':>8}")
    for s in doc["shapes"]:
        rs = [r for r in recs if r["kernel_key"] == s["key"]]
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            continue
        best = min(r["time_ms"] for r in ok)
        kept = [r["time_ms"] for r in ok if r["rule"] is None]
        rej = [r["time_ms"] for r in ok if r["rule"] is not None]
        dflt = rs[0]["time_ms"] if rs[0]["status"] == "ok" else None
        s.update(best_ms=best, best_kept_ms=min(kept) if kept else None, best_rejected_ms=min(rej) if rej else None)
        print(f"{'x'.join(map(str, s['shape'])):<18} {len(rs):>8} {len(rs) - len(ok):>6} {len(rej):>11} "
              f"{best:>9.4f} {(dflt / best if dflt else float('nan')):>12.2f} "
              f"{(min(rej) / min(kept) if rej and kept else float('nan')):>18.2f} "
              f"{(s.get('aten_ms') or float('nan')):>8.4f}")
    save()
    print(f"{len(recs)} records in {time.perf_counter() - t_start:.0f}s (stopped: {stopped}); JSON in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
