"""The workloads of shared/ANCHORS.md: eager vs torch.compile (Inductor default) vs tilecraft, one process.

    python bench/anchors.py [--only softmax,layernorm] [--out bench/results/anchors.json] [--dry-run]

Prints a table (time, speedup over eager, ratio to Inductor, % of the bandwidth or FLOP floor) and writes JSON.
Every tilecraft result is checked against eager first. `--dry-run` runs tiny shapes on the CPU (interpreter).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/peaks.py, also when loaded by path

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peaks  # noqa: E402 - bench/peaks.py: floors from this device's measured copy and matmul rates
import tilecraft  # noqa: E402
from tilecraft.models import RMSNorm, TransformerBlock  # noqa: E402
from tilecraft.testing import interleaved_rounds  # noqa: E402


class EltChain(nn.Module):
    def forward(self, x, b, y):
        return F.gelu(x + b) * torch.sigmoid(y) + 0.5 * y


class LinearGelu(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x):
        return F.gelu(self.fc(x))


class SwiGLU(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class W8Linear(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.register_buffer("wq", torch.randint(-127, 127, (n, k), dtype=torch.int8))
        self.register_buffer("scale", torch.rand(n, 1) * 0.01)

    def forward(self, x):
        return x @ (self.wq.to(x.dtype) * self.scale.to(x.dtype)).t()


class ConvBNReLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + x)


def workloads(dry: bool):
    """(name, model, inputs, floor bytes, floor flops) per ANCHORS row; tiny shapes for --dry-run."""
    s = (lambda big, small: small if dry else big)
    bf = torch.bfloat16
    M, N = s(8192, 8), s(4096, 64)
    rows = [
        ("softmax_8192x4096", lambda: lambda x: torch.softmax(x, -1), lambda: [torch.randn(M, N)], bf, 2 * M * N * 2, 0),
        ("layernorm_8192x4096", lambda: nn.LayerNorm(N), lambda: [torch.randn(M, N)], bf, 2 * M * N * 2, 0),
        ("rmsnorm_8192x4096", lambda: RMSNorm(N), lambda: [torch.randn(M, N)], bf, 2 * M * N * 2, 0),
        ("eltchain_16M", lambda: EltChain(), lambda: [torch.randn(s(4096, 8), N), torch.randn(N),
                                                       torch.randn(s(4096, 8), N)], bf, 3 * s(4096, 8) * N * 2, 0),
        ("linear_gelu_8192x4096x4096", lambda: LinearGelu(N, N), lambda: [torch.randn(M, N)], bf,
         (2 * M * N + N * N) * 2, 2 * M * N * N),
        ("swiglu_4096x2048x5632", lambda: SwiGLU(s(2048, 32), s(5632, 48)), lambda: [torch.randn(s(4096, 8), s(2048, 32))],
         bf, 0, 2 * 3 * s(4096, 8) * s(2048, 32) * s(5632, 48)),
        ("w8linear_m1_4096x4096", lambda: W8Linear(N, N), lambda: [torch.randn(1, N)], bf, N * N, 0),
        ("w8linear_m16_4096x4096", lambda: W8Linear(N, N), lambda: [torch.randn(16, N)], bf, N * N, 0),
        ("convbnrelu_32x64x56x56", lambda: ConvBNReLU(s(64, 4)), lambda: [torch.randn(s(32, 2), s(64, 4), s(56, 6), s(56, 6))],
         torch.float16, 2 * s(32, 2) * s(64, 4) * s(56, 6) ** 2 * 2, 2 * 9 * s(32, 2) * s(64, 4) ** 2 * s(56, 6) ** 2),
        ("block_b8_t1024_d1024", lambda: TransformerBlock(s(1024, 32), s(16, 4)), lambda: [torch.randn(s(8, 2), s(1024, 8), s(1024, 32))],
         bf, 0, 0),
    ]
    return rows


def bench(fn, dry):
    if dry:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=50, rep=200, return_mode="median")


def block_flops(b, t, d):
    return 2 * b * t * (3 * d * d + d * d + 8 * d * d) + 2 * 2 * b * t * t * d / 2


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", default="")
    p.add_argument("--out", default="bench/results/anchors.json")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (interpreter), no timing claims")
    p.add_argument("--no-inductor", action="store_true")
    p.add_argument("--tune", type=int, default=0, metavar="N",
                   help="also tune every kernel (guided search, N measurements each, a temporary schedule DB) and "
                        "time tilecraft.compile(schedules=DB): the 'tuned' column")
    p.add_argument("--cpu-profile", action="store_true",
                   help="print where tilecraft's per-call CPU time goes (cProfile of 100 calls, top functions)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved GPU-time rounds per backend (medians)")
    args = p.parse_args(argv)
    ROUNDS[0] = args.rounds
    dev = "cpu" if args.dry_run else "cuda"
    peak = peaks.measure(cuda=not args.dry_run)
    print(peaks.describe(peak), flush=True)
    torch.manual_seed(0)
    results = []
    for name, make_model, make_inputs, dtype, nbytes, flops in workloads(args.dry_run):
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        if name.startswith("block"):
            x_shape = make_inputs()[0].shape
            flops = block_flops(*x_shape)
        torch._dynamo.reset()
        model = make_model()
        if isinstance(model, nn.Module):
            model = model.eval().to(dev, dtype)
        inputs = [t.to(dev, dtype) for t in make_inputs()]
        row = {"workload": name, "dtype": str(dtype).replace("torch.", "")}
        try:
            run_row(row, model, inputs, args.dry_run, args.no_inductor, nbytes, flops, args.tune, args.cpu_profile,
                    peak)
        except Exception as e:  # one broken workload must not hide the others' numbers
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        results.append(row)
        print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    meta = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu (interpreter)",
            "torch": torch.__version__, "dry_run": args.dry_run, "peaks": peak}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print_table(meta, results, args.dry_run)
    return 0 if all(r.get("correct") for r in results) else 1


def gpu_ms(fn) -> float:
    """GPU time per call: the sum of the kernels' device times (torch profiler, mean of 10 calls)."""
    from tilecraft.testing import gpu_profile

    return sum(t for _, t in gpu_profile(fn)) / 1e3


ROUNDS = [3]  # --rounds


def gpu_rounds(ind, tc, rounds: int) -> tuple[float, float, dict]:
    """(Inductor GPU ms, tilecraft GPU ms, every round's): medians of interleaved profiling rounds
    (tilecraft.testing.interleaved_rounds)."""
    got = dict(zip(("inductor", "tilecraft"), interleaved_rounds([ind, tc], rounds, gpu_ms)))
    med = {k: sorted(v)[len(v) // 2] for k, v in got.items()}
    return med["inductor"], med["tilecraft"], {k: [round(x, 4) for x in v] for k, v in got.items()}


def print_cpu_profile(name, fn, n=100):
    import cProfile
    import pstats

    fn()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    print(f"---- {name}: CPU profile of {n} tilecraft calls")
    pstats.Stats(pr).sort_stats("tottime").print_stats(14)


def max_rel_err(got, expected) -> float:
    """max |got - expected| relative to max |expected|."""
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-6)).item()


def run_row(row, model, inputs, dry, no_inductor, nbytes, flops, tune=0, cpu_profile=False, peak=None):
    """Eager, Inductor, tilecraft (and its CUDA-graph replay) on one workload; fills `row` as it goes."""
    with torch.no_grad():
        expected = model(*inputs)
        row["eager_ms"] = bench(lambda: model(*inputs), dry)
        if not no_inductor and not dry:
            t0 = time.perf_counter()
            ind = torch.compile(model)
            ind(*inputs)
            row["inductor_compile_s"] = time.perf_counter() - t0
            row["inductor_ms"] = bench(lambda: ind(*inputs), False)
            row["inductor_gpu_ms"] = gpu_ms(lambda: ind(*inputs))
        torch._dynamo.reset()
        t0 = time.perf_counter()
        tc = tilecraft.compile(model)
        got = tc(*inputs)
        row["tilecraft_compile_s"] = time.perf_counter() - t0
        # later calls take the direct launch path: check them too
        err = max(max_rel_err(got, expected), max_rel_err(tc(*inputs), expected))
        row["rel_err"] = err
        row["correct"] = bool(err < 3e-2)
        row["kernels"] = sum(len(g.kernels) for g in tc.report.graphs)
        row["fallback_ops"] = sorted({f for g in tc.report.graphs for f in g.fallbacks})
        row["tilecraft_ms"] = bench(lambda: tc(*inputs), dry)
        if not dry:  # the kernels' own time, without the CPU's launch cost (torch profiler)
            row["tilecraft_gpu_ms"] = gpu_ms(lambda: tc(*inputs))
        if cpu_profile:
            print_cpu_profile(row["workload"], lambda: tc(*inputs))
        if not dry:  # the same kernels replayed as one CUDA graph (no Python launch overhead)
            torch._dynamo.reset()
            tcg = tilecraft.compile(model, cuda_graphs=True)
            row["correct_cuda_graph"] = max_rel_err(tcg(*inputs), expected) < 3e-2
            row["tilecraft_cuda_graph_ms"] = bench(lambda: tcg(*inputs), False)
        if not dry and "inductor_gpu_ms" in row and ROUNDS[0] > 1:  # interleaved rounds, medians (see gpu_rounds)
            row["inductor_gpu_ms"], row["tilecraft_gpu_ms"], row["gpu_ms_rounds"] = gpu_rounds(
                lambda: ind(*inputs), lambda: tc(*inputs), ROUNDS[0])
        if tune and not dry:
            try:
                tune_row(row, model, inputs, expected, [k for g in tc.report.graphs for k in g.kernels], tune)
            except Exception as e:  # the default numbers stand without it
                traceback.print_exc()
                row["tune_error"] = f"{type(e).__name__}: {e}"[:300]
    floor_ms = peaks.floor_ms(nbytes, flops, peak or peaks.measure(cuda=not dry))
    row["floor_ms"] = floor_ms
    row["pct_of_floor"] = 100 * floor_ms / row["tilecraft_ms"] if floor_ms else None
    row["speedup_vs_eager"] = row["eager_ms"] / row["tilecraft_ms"]
    if "inductor_ms" in row:
        row["vs_inductor"] = row["inductor_ms"] / row["tilecraft_ms"]


def tune_row(row, model, inputs, expected, kernels, budget):
    """Tune this workload's kernels into a fresh DB, recompile with it, check and time (the 'tuned' column)."""
    import tempfile

    from tilecraft.tuner.measure import GPUMeasurer
    from tilecraft.tuner.tune import tune_kernels

    db = os.path.join(tempfile.mkdtemp(prefix="anchors_"), "schedules.sqlite")
    measurer = GPUMeasurer(time_limit_s=3.0, reps=10)
    t0 = time.perf_counter()
    summaries = tune_kernels(kernels, db, budget, "guided", measurer_factory=lambda k, s: measurer,
                             time_budget_s=15.0, progress=False)
    row["tune_s"] = time.perf_counter() - t0
    row["tuned_kernels"] = [{"kernel": s.name, "default_ms": s.default_ms, "tuned_ms": s.tuned_ms,
                             "best_config": s.best_config, "measured": s.measurements} for s in summaries]
    torch._dynamo.reset()
    tct = tilecraft.compile(model, schedules=db)
    row["correct_tuned"] = max_rel_err(tct(*inputs), expected) < 3e-2
    row["tilecraft_tuned_ms"] = bench(lambda: tct(*inputs), False)


def print_table(meta, results, dry):
    print(f"\n{meta['device']}, torch {meta['torch']}; {peaks.describe(meta['peaks'])}"
          + ("  (DRY RUN: CPU interpreter, times meaningless)" if dry else ""))
    hdr = f"{'workload':28} {'eager ms':>9} {'inductor':>9} {'tilecraft':>9} {'x eager':>8} {'x induct':>8} " \
          f"{'% floor':>8} {'kern':>5} {'ok':>3}"
    print(hdr)
    for r in results:
        if "error" in r:
            print(f"{r['workload']:28} ERROR {r['error'][:90]}")
            continue
        ind = f"{r['inductor_ms']:.4f}" if "inductor_ms" in r else "-"
        vs = f"{r['vs_inductor']:.2f}" if "vs_inductor" in r else "-"
        pf = f"{r['pct_of_floor']:.0f}%" if r["pct_of_floor"] else "-"
        print(f"{r['workload']:28} {r['eager_ms']:9.4f} {ind:>9} {r['tilecraft_ms']:9.4f} "
              f"{r['speedup_vs_eager']:8.2f} {vs:>8} {pf:>8} {r['kernels']:5d} {'yes' if r['correct'] else 'NO':>3}")
        if "tilecraft_gpu_ms" in r:
            ind_gpu = f"{r['inductor_gpu_ms']:.4f}" if "inductor_gpu_ms" in r else "-"
            print(f"{'':28} {'':9} {ind_gpu:>9} {r['tilecraft_gpu_ms']:9.4f}  (GPU time per call, torch profiler; "
                  f"tilecraft at {100 * r['floor_ms'] / r['tilecraft_gpu_ms']:.0f}% of the floor)")
        if "tilecraft_tuned_ms" in r:
            print(f"{'':28} {'':9} {'':>9} {r['tilecraft_tuned_ms']:9.4f}  (tuned: {len(r['tuned_kernels'])} kernels "
                  f"in {r['tune_s']:.0f}s{', correct' if r['correct_tuned'] else ', WRONG'})")
        if "tilecraft_cuda_graph_ms" in r:
            print(f"{'':28} {'':9} {'':>9} {r['tilecraft_cuda_graph_ms']:9.4f}  (CUDA graph replay"
                  f"{', correct' if r['correct_cuda_graph'] else ', WRONG'})")


if __name__ == "__main__":
    sys.exit(main())
