"""Offline tuning of every kernel of the ANCHORS transformer block, and what it buys the whole model.

    python bench/tune_model.py            # H100: < 6 minutes (tuning capped at --tune-seconds, default 150 s)
    python bench/tune_model.py --quick    # ~3 minutes (tuning capped at 60 s, budget 16 per kernel)
    python bench/tune_model.py --dry-run  # CPU: tiny block, Triton interpreter, simulated kernel times

Workload (shared/ANCHORS.md "block_b8_t1024_d1024"): tilecraft.models.TransformerBlock(d=1024, heads=16), bf16,
batch 8 x 1024 tokens, inference. Steps, all in one process:
 1. eager time; tilecraft.compile with default configs (no schedule DB): compile time, model time, correctness;
 2. `tune_kernels` on every generated kernel (guided search, GPU measurer: warm-up, L2-rotated inputs, median of
    CUDA-event timings, every candidate's output checked against the default config's) with a per-kernel budget
    and a cap on the whole tuning run; tuning wall time is compared with Inductor max-autotune's 123 s;
 3. tilecraft.compile(schedules=DB): model time with the tuned configs, correctness, how many configs came from
    the DB; 4. torch.compile (Inductor default): compile time and model time.
Prints the per-kernel table and the whole-model table last; writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/tuning_device.py, also when loaded by path

from tuning_device import tuning_device  # noqa: E402

INDUCTOR_MAX_AUTOTUNE_S = 123.0  # shared/ANCHORS.md, block_b8_t1024_d1024, compile seconds
ANCHOR_MS = {"eager": 0.4875, "inductor_default": 0.4888, "inductor_max_autotune": 0.4710, "floor": 0.3191}


def workload(dry: bool):
    """(model, example input, dtype): the ANCHORS block on CUDA, or a tiny block on the CPU for --dry-run."""
    import torch

    from tilecraft.models import TransformerBlock

    torch.manual_seed(0)
    if dry:
        return TransformerBlock(d=32, heads=4).eval(), torch.randn(1, 8, 32), torch.float32
    dt = torch.bfloat16
    model = TransformerBlock(d=1024, heads=16).eval().to("cuda", dt)
    return model, torch.randn(8, 1024, 1024, device="cuda", dtype=dt), dt


def time_ms(fn, dry: bool) -> float:
    """Median ms of fn(): triton.testing.do_bench on the GPU; a few perf_counter runs on the CPU."""
    import torch

    with torch.no_grad():
        if dry:
            fn()
            ts = []
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                ts.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ts)
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median"))


def check(got, ref) -> tuple[bool, float, str]:
    """(matches, max abs error, message) of a compiled output against eager, with tilecraft's dtype tolerances."""
    from tilecraft.testing import assert_close

    err = (got.float() - ref.float()).abs().max().item()
    try:
        assert_close(got, ref)
        return True, err, "ok"
    except AssertionError as e:
        return False, err, str(e).splitlines()[0][:200]


def compile_tilecraft(model, x, schedules: str | None):
    """tilecraft.compile + first call: (compiled, seconds, output, kernels)."""
    import torch

    import tilecraft

    torch._dynamo.reset()
    t0 = time.perf_counter()
    compiled = tilecraft.compile(model, schedules=schedules) if schedules else tilecraft.compile(model)
    with torch.no_grad():
        out = compiled(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    kernels = [k for g in compiled.report.graphs for k in g.kernels]
    return compiled, time.perf_counter() - t0, out, kernels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="budget 16 per kernel, tuning capped at 60 s")
    p.add_argument("--dry-run", action="store_true", help="CPU: tiny block, interpreter, simulated kernel times")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "tune_model.json"))
    p.add_argument("--db", default=None, help="schedule DB to write (default: a fresh temporary file)")
    p.add_argument("--budget", default=None, help="measurements per kernel (default 48; --quick 16; dry-run 4)")
    p.add_argument("--tune-seconds", type=float, default=None,
                   help="cap on the whole tuning run (default 150; --quick 60); matmuls get 3 shares each")
    p.add_argument("--kernel-seconds", type=float, default=40.0, help="cap per kernel")
    p.add_argument("--no-inductor", action="store_true", help="skip the torch.compile comparison")
    p.add_argument("--plot", default=None, metavar="DIR", help="a PNG tuning curve per kernel")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    dry = args.dry_run
    device = tuning_device(dry)
    if device is None:
        return 2
    import torch

    from tilecraft.testing import gpu_profile
    from tilecraft.tuner.measure import GPUMeasurer, simulated_measurer_factory
    from tilecraft.tuner.tune import summary_table, tune_kernels

    budget = args.budget or ("4" if dry else "16" if args.quick else "48")
    tune_s = args.tune_seconds if args.tune_seconds is not None else (60.0 if args.quick or dry else 150.0)
    tmp = tempfile.mkdtemp(prefix="tune_model_")
    os.environ["TILECRAFT_SCHEDULES"] = os.path.join(tmp, "no-default-db.sqlite")  # "default" = no DB at all
    db = args.db or os.path.join(tmp, "schedules.sqlite")
    t_start = time.perf_counter()
    res: dict = {"device": device.to_dict(), "dry_run": dry, "quick": args.quick, "budget": budget,
                 "tune_seconds_cap": tune_s, "torch": torch.__version__}

    model, x, dt = workload(dry)
    res["workload"] = {"model": "TransformerBlock", "input": list(x.shape), "dtype": str(dt).replace("torch.", "")}
    with torch.no_grad():
        ref = model(x)
    eager_ms = time_ms(lambda: model(x), dry)
    print(f"eager: {eager_ms:.4f} ms", flush=True)

    # 1. tilecraft, default configs.
    comp_d, compile_d_s, out_d, kernels = compile_tilecraft(model, x, None)
    ok_d, err_d, msg_d = check(out_d, ref)
    fallbacks = sorted({f for g in comp_d.report.graphs for f in g.fallbacks})
    default_ms = time_ms(lambda: comp_d(x), dry)
    print(f"tilecraft default: {default_ms:.4f} ms, {len(kernels)} kernels, compiled in {compile_d_s:.1f}s, "
          f"correct: {msg_d}" + (f"; ran through torch: {fallbacks}" if fallbacks else ""), flush=True)
    if not kernels:
        print("tilecraft generated no kernels for this model: nothing to tune")
        return 1

    # 2. Tune every kernel.
    if dry:
        factory = simulated_measurer_factory
    else:
        measurer = GPUMeasurer(time_limit_s=5.0, reps=15, l2_bytes=device.l2_bytes)
        factory = lambda kernel, space: measurer  # noqa: E731 - one measurer keeps its per-kernel references
    t0 = time.perf_counter()
    rows = tune_kernels(kernels, db, budget, "guided", measurer_factory=factory, device_info=device,
                        time_budget_s=args.kernel_seconds, total_seconds=tune_s, progress=not args.no_progress,
                        plot_dir=args.plot)
    tune_wall = time.perf_counter() - t0
    print(f"tuned {len(rows)} kernels in {tune_wall:.1f}s ({sum(r.measurements for r in rows)} measurements)"
          + (" INTERRUPTED" if rows.interrupted else ""), flush=True)

    # 3. tilecraft with the tuned configs.
    comp_t, compile_t_s, out_t, kernels_t = compile_tilecraft(model, x, db)
    ok_t, err_t, msg_t = check(out_t, ref)
    from_db = sum(k.info.get("config_source") == "database" for k in kernels_t)
    tuned_ms = time_ms(lambda: comp_t(x), dry)
    print(f"tilecraft tuned: {tuned_ms:.4f} ms, {from_db}/{len(kernels_t)} configs from the DB, correct: {msg_t}",
          flush=True)
    if not dry:  # where the time goes, per GPU kernel: default vs tuned (and the default again, re-timed)
        res["profile"] = {}
        for label, comp in (("default", comp_d), ("tuned", comp_t)):
            with torch.no_grad():
                prof = gpu_profile(lambda: comp(x))  # noqa: B023
            res["profile"][label] = prof
            print(f"GPU kernels per call, {label}: total {sum(t for _, t in prof):.1f} us; "
                  + ", ".join(f"{k[:40]} {t:.1f}" for k, t in prof[:8]), flush=True)
        res["default_ms_after_tuning"] = time_ms(lambda: comp_d(x), dry)
        print(f"tilecraft default, re-timed after tuning: {res['default_ms_after_tuning']:.4f} ms", flush=True)

    # 4. torch.compile (Inductor default).
    ind_ms = ind_compile_s = None
    ind_msg = "skipped"
    if not args.no_inductor and not dry:
        torch._dynamo.reset()
        t0 = time.perf_counter()
        cm = torch.compile(model)
        with torch.no_grad():
            out_i = cm(x)
        torch.cuda.synchronize()
        ind_compile_s = time.perf_counter() - t0
        ind_msg = check(out_i, ref)[2]
        ind_ms = time_ms(lambda: cm(x), dry)
        print(f"torch.compile default: {ind_ms:.4f} ms, compiled in {ind_compile_s:.1f}s, correct: {ind_msg}",
              flush=True)

    res["kernels"] = [{"name": r.name, "key": r.key, "template": r.template, "shapes": r.shapes, "dtype": r.dtype,
                       "default_ms": r.default_ms, "tuned_ms": r.tuned_ms, "speedup": r.speedup,
                       "measurements": r.measurements, "failed": r.failed, "best_config": r.best_config,
                       "stopped": r.result.stopped, "seconds": r.result.seconds} for r in rows]
    res["tuning"] = {"wall_s": tune_wall, "interrupted": rows.interrupted,
                     "measurements": sum(r.measurements for r in rows),
                     "vs_inductor_max_autotune_s": INDUCTOR_MAX_AUTOTUNE_S,
                     "compile_plus_tune_s": compile_d_s + tune_wall + compile_t_s}
    res["model"] = {
        "eager_ms": eager_ms,
        "tilecraft_default": {"ms": default_ms, "compile_s": compile_d_s, "correct": ok_d, "max_abs_err": err_d,
                              "check": msg_d, "kernels": len(kernels), "torch_fallbacks": fallbacks},
        "tilecraft_tuned": {"ms": tuned_ms, "compile_s": compile_t_s, "correct": ok_t, "max_abs_err": err_t,
                            "check": msg_t, "configs_from_db": from_db, "kernels": len(kernels_t)},
        "inductor_default": {"ms": ind_ms, "compile_s": ind_compile_s, "check": ind_msg},
        "anchors_ms": ANCHOR_MS}
    res["db"] = db
    res["seconds"] = time.perf_counter() - t_start
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))

    unit = "ms (SIMULATED kernel times; dry run)" if dry else "ms"
    print(f"\nper kernel ({unit}; default = the template's heuristic config, same measurer):")
    print(summary_table(rows))
    print(f"\ntuning: {tune_wall:.1f}s wall for {len(rows)} kernels (cap {tune_s:.0f}s; Inductor max-autotune on this "
          f"block: {INDUCTOR_MAX_AUTOTUNE_S:.0f}s); compile+tune+recompile {res['tuning']['compile_plus_tune_s']:.1f}s")

    def f(v, spec):
        return format(v, spec) if v is not None else format("-", ">" + spec.split(".")[0])

    print(f"\nwhole block, {'x'.join(map(str, x.shape))} {res['workload']['dtype']} ({'CPU interpreter' if dry else device.name})")
    print(f"{'':<24} {'ms':>9} {'vs eager':>9} {'compile s':>10}  correct")
    lines = [("eager", eager_ms, None, "reference"),
             ("tilecraft default", default_ms, compile_d_s, msg_d),
             ("tilecraft tuned", tuned_ms, compile_t_s, msg_t),
             ("torch.compile default", ind_ms, ind_compile_s, ind_msg)]
    for name, ms, cs, msg in lines:
        sp = f"{eager_ms / ms:.2f}x" if ms else "-"
        print(f"{name:<24} {f(ms, '9.4f')} {sp:>9} {f(cs, '10.1f')}  {msg[:60]}")
    print(f"total {res['seconds']:.0f}s; JSON in {args.out}")
    return 0 if ok_d and ok_t else 1


if __name__ == "__main__":
    sys.exit(main())
