"""Tuned Triton GEMM vs cuBLAS, and how many measurements each search strategy needs (tilecraft tuner).

    python bench/tune_gemm.py            # H100: ~5-8 minutes
    python bench/tune_gemm.py --quick    # fewer shapes and seeds
    python bench/tune_gemm.py --dry-run  # CPU: tiny shapes, Triton interpreter for correctness, simulated times

(a) For 4096^3 and 8192^3 in fp16 and bf16: the best config of the bounded space (measured exhaustively) and
    what guided search finds in --budget measurements, in TFLOP/s, against torch.matmul (cuBLAS).
Every measured config is also kept in the JSON's "records" (read by cost_model.load_records).
(b) For >= 5 GEMM shapes (shared/ANCHORS.md "Tiling matters"): exhaustive over a bounded pruned space
    (<= --max-configs each, every config measured once), then random and guided search replayed on that table
    over several seeds: measurements needed to get within 5% of the exhaustive best. "guided+transfer" starts
    from a cost model trained on the other shapes' tables (leave-one-shape-out).
(c) The same (a) shapes with tilecraft's CODEGEN matmul kernel (what `tilecraft.compile` emits for `a @ b`: the
    fused-epilogue template, no SPLIT_K): its default config, and the best of its default plus the
    --codegen-configs fastest SPLIT_K=1 configs of the (a) table, against cuBLAS (--no-codegen skips it).
Prints a table last; writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/peaks.py, also when loaded by path

from tuning_device import tuning_device  # noqa: E402 - bench/tuning_device.py

BATCH = 4  # guided search measures this many configs per model update
SHAPES = [(4096, 4096, 4096), (1024, 1024, 1024), (16, 4096, 4096), (128, 4096, 11008), (2048, 5632, 2048),
          (512, 512, 8192)]
QUICK_SHAPES = [(1024, 1024, 1024), (16, 4096, 4096), (512, 512, 8192), (2048, 5632, 2048), (4096, 4096, 4096)]
CUBLAS_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192)]
DRY_SHAPES = [(32, 32, 64), (16, 64, 64), (64, 32, 32), (48, 40, 64), (32, 16, 128)]
DRY_CUBLAS = [(32, 32, 32), (64, 64, 64)]


def bounded_space(shapes: dict, dtype, device, max_configs: int, dry: bool):
    """A pruned matmul space: 3 tile sizes per dim that fit the problem, BLOCK_K 32-128, 4/8 warps, 3-5 stages,
    GROUP_M 8, SPLIT_K 1-4 where useful; deterministically subsampled to max_configs (default kept)."""
    from tilecraft.tuner.spaces import next_pow2, restrict, space_for, subset_space

    full = space_for("matmul", shapes, dtype, device)

    def fit(dim):
        return [b for b in (16, 32, 64, 128, 256) if b <= max(16, next_pow2(dim))][-3:]

    if dry:
        sp = restrict(full, BLOCK_M=[16, 32], BLOCK_N=[16, 32], BLOCK_K=[16, 32], GROUP_M=[1, 4],
                      SPLIT_K=[1, 2], num_warps=[2, 4], num_stages=[2, 3])
    else:
        sp = restrict(full, BLOCK_M=fit(shapes["M"]), BLOCK_N=fit(shapes["N"]), BLOCK_K=[32, 64, 128],
                      GROUP_M=[8] if shapes["M"] > 128 else [1], SPLIT_K=[1, 2, 4], num_warps=[4, 8],
                      num_stages=[3, 4, 5])
    configs = sp.enumerate()
    if len(configs) > max_configs:
        configs = random.Random(0).sample(configs, max_configs)
    return subset_space(sp, configs), configs


def _precompile_worker(args):  # pragma: no cover - runs on the GPU box
    os.environ.pop("TRITON_INTERPRET", None)
    kernel, configs = args
    import torch

    a = kernel.make_args("cuda", 0)
    ok = 0
    for c in configs:
        try:
            kernel.launch(a, c)
            ok += 1
        except Exception:
            pass
    torch.cuda.synchronize()
    return ok


def precompile(kernel, configs, workers: int) -> float:
    """Fill Triton's on-disk cache for all configs in parallel processes (compiles dominate GPU tuning time)."""
    t0 = time.perf_counter()
    chunks = [configs[i::workers] for i in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_precompile_worker, [(kernel, ch) for ch in chunks if ch])
    return time.perf_counter() - t0


def _matmul(a, b):
    return a @ b


def codegen_gemm_kernel(M: int, N: int, K: int, dtype, device: str, matmul: str = "auto"):
    """The matmul kernel tilecraft's codegen emits for `a @ b` (compiled and run once to build it; `matmul` is
    compile's backend option, which sets the kernel's default BACKEND)."""
    import torch

    import tilecraft

    torch._dynamo.reset()
    a = torch.randn(M, K, dtype=dtype, device=device)
    b = torch.randn(K, N, dtype=dtype, device=device)
    compiled = tilecraft.compile(_matmul, matmul=matmul)
    with torch.no_grad():
        compiled(a, b)
    ks = [k for g in compiled.report.graphs for k in g.kernels]
    if len(ks) != 1 or ks[0].template != "matmul":
        raise RuntimeError(f"expected one codegen matmul kernel for a @ b, got {[k.name for k in ks]}")
    return ks[0]


def codegen_candidates(table: dict, default: dict, n: int) -> list[dict]:
    """The n fastest SPLIT_K=1 configs of a ReferenceGemm table, as codegen matmul configs (its knobs only; the
    generated grouped variant, which is what the reference GEMM is)."""
    from tilecraft.codegen.matmul import VARIANT_KNOBS

    ok = sorted((m for m in table.values() if m.ok and m.config.get("SPLIT_K", 1) == 1), key=lambda m: m.time_ms)
    out, seen = [], set()
    for m in ok:
        c = {**default, **{k: v for k, v in VARIANT_KNOBS.items() if k in default},
             **({"BACKEND": "triton"} if "BACKEND" in default else {}),
             **{k: m.config[k] for k in default if k in m.config}}
        if set(c) == set(default) and json.dumps(c, sort_keys=True) not in seen:
            seen.add(json.dumps(c, sort_keys=True))
            out.append(c)
        if len(out) >= n:
            break
    return out


def time_cublas(M, N, K, dtype, l2_bytes, reps=30) -> float:
    """torch.matmul median ms with the same arg-set rotation the tuner's measurer uses."""
    import torch

    nbytes = (M * K + K * N + M * N) * torch.empty((), dtype=dtype).element_size()
    n = int(max(1, min(16, math.ceil(2 * l2_bytes / nbytes))))
    sets = [(torch.randn(M, K, device="cuda", dtype=dtype), torch.randn(K, N, device="cuda", dtype=dtype),
             torch.empty(M, N, device="cuda", dtype=dtype)) for _ in range(n)]
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(reps + 5):
        s.record()
        for a, b, c in sets:
            torch.matmul(a, b, out=c)
        e.record()
        e.synchronize()
        if i >= 5:
            times.append(s.elapsed_time(e) / n)
    return statistics.median(times)


def exhaustive_table(kernel, configs, measurer):
    from tilecraft.tuner.spaces import config_key

    table = {}
    m0 = measurer.measure(kernel, kernel.default_config())
    table[config_key(m0.config)] = m0
    for c in configs:
        k = config_key(c)
        if k not in table:
            table[k] = measurer.measure(kernel, c)
    return table


def replay_runs(kernel, space, table, device, seeds, target, budget, prior=None):
    """Measurements random / guided need to reach `target` ms when replaying the exhaustive table."""
    from tilecraft.tuner.cost_model import XGBoostCostModel
    from tilecraft.tuner.measure import ReplayMeasurer
    from tilecraft.tuner.search import search

    out = {"random": [], "guided": []}
    if prior:
        out["guided+transfer"] = []
    for seed in range(seeds):
        for strat in out:
            s = "guided" if strat.startswith("guided") else strat
            r = search(kernel, space, ReplayMeasurer(table), s, budget=budget, seed=seed, device_info=device,
                       target_ms=target, prior_records=prior if strat == "guided+transfer" else None,
                       model=XGBoostCostModel(num_rounds=60), batch_size=BATCH,
                       measure_default=strat != "guided+transfer")  # a trained model knows better
            out[strat].append(r.measurements_to_reach(target) or budget)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny shapes, interpreter, simulated timings")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune_gemm.json"))
    p.add_argument("--max-configs", type=int, default=150)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--budget", type=int, default=32, help="guided-search budget for part (a)")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--codegen-configs", type=int, default=8, help="(c): top reference configs tried on codegen")
    p.add_argument("--no-codegen", action="store_true", help="skip (c), the codegen matmul kernel")
    args = p.parse_args(argv)
    dry = args.dry_run
    device = tuning_device(dry)
    if device is None:
        return 2
    import torch

    from tilecraft.tuner.device import PRESETS
    from tilecraft.tuner.measure import GPUMeasurer, ReplayMeasurer, SimulatedMeasurer, roofline_gemm_ms
    from tilecraft.tuner.reference_kernels import ReferenceGemm
    from tilecraft.tuner.search import search, to_record

    if not dry:  # this device's measured peaks (bench/peaks.py), not a preset's or the unknown-GPU default
        import dataclasses

        import peaks

        peak = peaks.measure()
        print(peaks.describe(peak), flush=True)
        device = dataclasses.replace(device, bandwidth_gbps=peak["bandwidth"] / 1e9,
                                     peak_tflops=peak["flops"] / 1e12)
    sim_dev = PRESETS["H100"]
    seeds = args.seeds or (3 if dry or args.quick else 5)
    max_configs = min(args.max_configs, 24 if dry else args.max_configs)
    t_start = time.perf_counter()

    def measurer_for(shapes):
        if dry:  # kernels really run (interpreter) and are checked; times from the roofline surface
            return SimulatedMeasurer(lambda c: roofline_gemm_ms(shapes, c, sim_dev), run_kernels=True)
        return GPUMeasurer(time_limit_s=5.0, reps=15, l2_bytes=device.l2_bytes)

    results = {"device": device.to_dict(), "dry_run": dry, "cublas": [], "search": [], "codegen": [],
               "records": []}  # every measured config (cost_model.load_records reads this file)
    compiled: set = set()

    def ensure_compiled(kernel, configs):
        if dry or not args.workers or args.workers < 2:
            return 0.0
        todo = [c for c in configs if (str(kernel.dtype), json.dumps(c, sort_keys=True)) not in compiled]
        compiled.update((str(kernel.dtype), json.dumps(c, sort_keys=True)) for c in configs)
        return precompile(kernel, todo, args.workers) if todo else 0.0

    # (b) search efficiency (fp16), first: its tables also serve (a) for 4096^3 fp16.
    shapes_b = DRY_SHAPES if dry else (QUICK_SHAPES if args.quick else SHAPES)
    tables = {}
    for M, N, K in shapes_b:
        kern = ReferenceGemm(M, N, K, torch.float16)
        space, configs = bounded_space(kern.shapes, torch.float16, device, max_configs, dry)
        t_pre = ensure_compiled(kern, configs + [kern.default_config()])
        t0 = time.perf_counter()
        table = exhaustive_table(kern, configs, measurer_for(kern.shapes))
        ok = [m for m in table.values() if m.ok]
        tables[(M, N, K)] = (kern, space, table)
        results["records"] += [to_record(kern, m, device).to_json() for m in table.values()]
        print(f"exhaustive {M}x{N}x{K}: {len(table)} configs ({len(table) - len(ok)} failed) measured in "
              f"{time.perf_counter() - t0:.1f}s (+{t_pre:.1f}s parallel compile)", flush=True)
    for (M, N, K), (kern, space, table) in tables.items():
        ok = [m for m in table.values() if m.ok]
        best = min(m.time_ms for m in ok)
        prior = [to_record(k2, m, device) for s2, (k2, _, t2) in tables.items() if s2 != (M, N, K)
                 for m in t2.values()]
        runs = replay_runs(kern, space, table, device, seeds, best * 1.05, len(table), prior)
        row = {"shape": [M, N, K], "configs": len(table), "failed": len(table) - len(ok), "best_ms": best,
               "default_ms": table[next(iter(table))].time_ms,
               "median_over_best": statistics.median(m.time_ms for m in ok) / best}
        for strat, ns in runs.items():
            row[f"{strat}_n"] = statistics.mean(ns)
            row[f"{strat}_runs"] = ns
        results["search"].append(row)
        print(f"search {M}x{N}x{K}: " + ", ".join(f"{s} {statistics.mean(v):.1f}" for s, v in runs.items()),
              flush=True)

    # (a) tuned GEMM vs cuBLAS.
    for dtype in (torch.float16, torch.bfloat16):
        for M, N, K in (DRY_CUBLAS if dry else CUBLAS_SHAPES):
            kern = ReferenceGemm(M, N, K, dtype)
            hit = tables.get((M, N, K)) if dtype == torch.float16 else None
            if hit is not None:
                space, table = hit[1], hit[2]
            else:
                space, configs = bounded_space(kern.shapes, dtype, device, max_configs, dry)
                ensure_compiled(kern, configs + [kern.default_config()])
                table = exhaustive_table(kern, configs, measurer_for(kern.shapes))
                results["records"] += [to_record(kern, m, device).to_json() for m in table.values()]
            ok = [m for m in table.values() if m.ok]
            best = min(ok, key=lambda m: m.time_ms)
            g = search(kern, space, ReplayMeasurer(table), "guided", budget=args.budget, seed=0, device_info=device)
            flops = 2.0 * M * N * K
            cublas = None if dry else time_cublas(M, N, K, dtype, device.l2_bytes)
            row = {"shape": [M, N, K], "dtype": str(dtype).replace("torch.", ""), "best_ms": best.time_ms,
                   "best_config": best.config, "guided_ms": g.best.time_ms, "guided_budget": args.budget,
                   "default_ms": table[next(iter(table))].time_ms, "cublas_ms": cublas,
                   "tuned_tflops": flops / best.time_ms / 1e9, "guided_tflops": flops / g.best.time_ms / 1e9,
                   "cublas_tflops": flops / cublas / 1e9 if cublas else None,
                   "ratio_vs_cublas": cublas / best.time_ms if cublas else None,
                   "guided_ratio_vs_cublas": cublas / g.best.time_ms if cublas else None}
            results["cublas"].append(row)
            print(f"gemm {M}x{N}x{K} {row['dtype']}: tuned {row['tuned_tflops']:.1f} TFLOP/s"
                  + (f", cuBLAS {row['cublas_tflops']:.1f} ({row['ratio_vs_cublas']:.3f}x)" if cublas else ""),
                  flush=True)
            if not args.no_codegen:  # (c) the codegen matmul kernel on the same problem
                t0 = time.perf_counter()
                ck = codegen_gemm_kernel(M, N, K, dtype, "cpu" if dry else "cuda")
                cands = codegen_candidates(table, ck.default_config(), args.codegen_configs)
                ctable = exhaustive_table(ck, cands, measurer_for(kern.shapes))
                cdef = ctable[next(iter(ctable))]
                cbest = min((m for m in ctable.values() if m.ok), key=lambda m: m.time_ms)
                results["codegen"].append({
                    "shape": [M, N, K], "dtype": row["dtype"], "kernel": ck.name, "configs": len(ctable),
                    "failed": sum(not m.ok for m in ctable.values()), "default_config": cdef.config,
                    "default_ms": cdef.time_ms, "best_ms": cbest.time_ms, "best_config": cbest.config,
                    "default_tflops": flops / cdef.time_ms / 1e9 if cdef.ok else None,
                    "tuned_tflops": flops / cbest.time_ms / 1e9, "cublas_ms": cublas,
                    "default_ratio_vs_cublas": cublas / cdef.time_ms if cublas and cdef.ok else None,
                    "ratio_vs_cublas": cublas / cbest.time_ms if cublas else None,
                    "reference_ratio_vs_cublas": row["ratio_vs_cublas"], "seconds": time.perf_counter() - t0})
                print(f"codegen gemm {M}x{N}x{K} {row['dtype']}: default {results['codegen'][-1]['default_tflops'] or 0:.1f}"
                      f", tuned {results['codegen'][-1]['tuned_tflops']:.1f} TFLOP/s ({len(ctable)} configs, "
                      f"{time.perf_counter() - t0:.0f}s)", flush=True)

    results["seconds"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    unit = "simulated units (dry run)" if dry else "TFLOP/s"

    def f(x, spec):
        return format(x, spec) if x is not None else format("-", ">" + spec.split(".")[0])

    print(f"\n(a) tuned Triton GEMM (exhaustive over bounded space; guided with {args.budget} measurements) vs "
          f"cuBLAS, {unit}" + ("" if dry else f"; this device's measured peak {device.peak_tflops:.0f} TFLOP/s"))
    print(f"{'shape':<16} {'dtype':<9} {'tuned':>8} {'guided':>8} {'cuBLAS':>8} {'tuned/cuBLAS':>13} "
          f"{'guided/cuBLAS':>14}")
    for r in results["cublas"]:
        print(f"{'x'.join(map(str, r['shape'])):<16} {r['dtype']:<9} {f(r['tuned_tflops'], '8.1f')} "
              f"{f(r['guided_tflops'], '8.1f')} {f(r['cublas_tflops'], '8.1f')} {f(r['ratio_vs_cublas'], '13.3f')} "
              f"{f(r['guided_ratio_vs_cublas'], '14.3f')}")
    if results["codegen"]:
        print(f"\n(c) tilecraft's codegen matmul kernel (a @ b; no SPLIT_K): default config and best of default + "
              f"{args.codegen_configs} top reference configs, {unit}")
        print(f"{'shape':<16} {'dtype':<9} {'default':>8} {'tuned':>8} {'cuBLAS':>8} {'default/cuBLAS':>15} "
              f"{'tuned/cuBLAS':>13} {'ref tuned/cuBLAS':>17}")
        for r in results["codegen"]:
            cub = 2.0 * r["shape"][0] * r["shape"][1] * r["shape"][2] / r["cublas_ms"] / 1e9 if r["cublas_ms"] else None
            print(f"{'x'.join(map(str, r['shape'])):<16} {r['dtype']:<9} {f(r['default_tflops'], '8.1f')} "
                  f"{f(r['tuned_tflops'], '8.1f')} {f(cub, '8.1f')} {f(r['default_ratio_vs_cublas'], '15.3f')} "
                  f"{f(r['ratio_vs_cublas'], '13.3f')} {f(r['reference_ratio_vs_cublas'], '17.3f')}")
    print(f"\n(b) measurements to reach within 5% of the exhaustive best (mean over {seeds} seeds)")
    print(f"{'shape':<16} {'space':>6} {'failed':>6} {'random':>8} {'guided':>8} {'transfer':>9} "
          f"{'guided/random':>14} {'guided/space':>13}")
    for r in results["search"]:
        print(f"{'x'.join(map(str, r['shape'])):<16} {r['configs']:>6} {r['failed']:>6} {r['random_n']:>8.1f} "
              f"{r['guided_n']:>8.1f} {r.get('guided+transfer_n', float('nan')):>9.1f} "
              f"{r['guided_n'] / r['random_n']:>14.3f} {r['guided_n'] / r['configs']:>13.3f}")
    gm = statistics.mean(r["guided_n"] for r in results["search"])
    rm = statistics.mean(r["random_n"] for r in results["search"])
    tm = statistics.mean(r["guided+transfer_n"] for r in results["search"])
    sm = statistics.mean(r["configs"] for r in results["search"])
    print(f"{'mean':<16} {sm:>6.0f} {'':>6} {rm:>8.1f} {gm:>8.1f} {tm:>9.1f} {gm / rm:>14.3f} {gm / sm:>13.3f}")
    print(f"total {results['seconds']:.0f}s; JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
