"""CUTLASS Hopper mixed-input GEMM variants (tilecraft/quant/cutlass VARIANTS) against cuBLAS bf16 and tilecraft's
current quantized prefill path (dequantize into a bf16 scratch buffer, then cuBLAS: kernels.dequant_matmul), on
LLaMA-492M's weight shapes at M=2048, int8 and int4 (groups of 128), cold weights.

Builds all the --variants first, concurrently (printing each build's seconds and ptxas registers / spills; cached
afterwards), then per scheme and shape checks each variant against x.float() @ dequantize(W).t() (max abs error
relative to max |ref|; > 2e-2 fails the run, exit 1) and times it, cuBLAS bf16 and dequantize + cuBLAS with CUDA
events (median of --iters calls after warm-up; the weights rotate among enough copies to overflow the 50 MB L2).
Each variant also computes one residual case per scheme, out = residual + x @ W.t() in place into the residual
buffer, checked the same way. Prints a table (us per variant, ratio to cuBLAS) and the best variant per scheme
(geometric mean of the ratios), and writes JSON to --out.

    pip install --no-deps --target /tmp/site nvidia_cutlass-4.2.0.0-py3-none-any.whl   # the CUTLASS headers
    PYTHONPATH=/tmp/site python bench/cutlass_mixed.py [--variants c128,c256] [--out bench/results/cutlass_mixed.json]

Needs an sm_90 GPU and nvcc ($CUDA_HOME/bin, PATH or /usr/local/cuda/bin); exits 2 without them.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import tilecraft.quant.cutlass as tc_cutlass
from tilecraft.quant import quantize_weight
from tilecraft.quant.kernels import dequant_matmul

SHAPES = [(3072, 2048), (2048, 2048), (11264, 2048), (2048, 5632), (32000, 2048)]  # N x K
SCHEMES = ("int8_weight_only", "int4_weight_only")
GROUP = 128
TOL = 2e-2
COLD_BYTES = 150 << 20  # rotated copies of a weight add up to at least this (3x the H200's 50 MB L2)


def nbytes(*ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts if t is not None)


def copies_for(size: int) -> int:
    return max(4, min(256, math.ceil(COLD_BYTES / max(size, 1))))


def time_us(fn, n_copies: int, iters: int, warmup: int = 5) -> float:
    """Median GPU time of fn(i) (i rotating over the weight copies), each call between its own CUDA events. A
    sleep kernel first lets the host queue all the calls, so host overhead (Python, ctypes) is not timed."""
    for i in range(warmup):
        fn(i % n_copies)
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    torch.cuda._sleep(100_000_000)  # ~50 ms of GPU clock cycles
    for i, (a, b) in enumerate(events):
        a.record()
        fn((warmup + i) % n_copies)
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in events)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).abs().max() / ref.abs().max())


def measure(scheme: str, n: int, k: int, group: int, M: int, iters: int, variants: list[str],
            check_residual: bool) -> dict:
    """Check and time each variant on one weight shape, then cuBLAS bf16 and dequantize + cuBLAS."""
    qw = quantize_weight(torch.randn(n, k, device="cuda") * 0.02, scheme, GROUP)
    x = torch.randn(M, k, device="cuda", dtype=torch.bfloat16)
    packed = tc_cutlass.repack(qw)
    w_ref = qw.dequantize(torch.float32)
    ref = x.float() @ w_ref.t()
    res = torch.randn(M, n, device="cuda", dtype=torch.bfloat16) if check_residual else None
    nc = copies_for(nbytes(packed.qweight, packed.scales, packed.zeros))
    pk = [packed] + [tc_cutlass.PackedWeight(packed.scheme, packed.qweight.clone(), packed.scales.clone(),
                                             None if packed.zeros is None else packed.zeros.clone(),
                                             packed.group, packed.shape) for _ in range(nc - 1)]
    out = torch.empty(M, n, device="cuda", dtype=torch.bfloat16)
    row = {"scheme": scheme, "M": M, "N": n, "K": k, "group": group, "variants": {}}
    for v in variants:
        r = row["variants"][v] = {}
        try:
            r["max_rel_err"] = rel_err(tc_cutlass.mixed_gemm(scheme, x, packed, variant=v), ref)
            if res is not None:  # in place: the residual buffer becomes the output
                buf = res.clone()
                tc_cutlass.mixed_gemm(scheme, x, packed, out=buf, residual=buf, variant=v)
                r["residual_rel_err"] = rel_err(buf, ref + res.float())
            r["us"] = time_us(lambda i: tc_cutlass.mixed_gemm(scheme, x, pk[i], out, variant=v), nc, iters)
            r["tflops"] = 2 * M * n * k / r["us"] / 1e6
        except tc_cutlass.CutlassError as e:  # a status from the library (e.g. can_implement): note it, go on
            r["error"] = str(e)
    del ref

    w_bf16 = w_ref.to(torch.bfloat16)
    nw = copies_for(nbytes(w_bf16))
    ws = [w_bf16] + [w_bf16.clone() for _ in range(nw - 1)]
    row["cublas_bf16_us"] = time_us(lambda i: torch.mm(x, ws[i].t(), out=out), nw, iters)
    nq = copies_for(nbytes(qw.qweight, qw.scales, qw.zeros))
    qs = [(qw.qweight, qw.scales, qw.zeros)] + [
        (qw.qweight.clone(), qw.scales.clone(), None if qw.zeros is None else qw.zeros.clone()) for _ in range(nq - 1)]
    row["dequant_matmul_us"] = time_us(lambda i: dequant_matmul(scheme, x, *qs[i], group, out=out), nq, iters)
    row["copies"] = [nc, nw, nq]
    cells = "  ".join(f"{v} {r['us']:.1f}" if "us" in r else f"{v} FAIL" for v, r in row["variants"].items())
    print(f"{scheme:17s} {n:6d}x{k:<5d} {cells}  cublas {row['cublas_bf16_us']:.1f}  "
          f"dequant+cublas {row['dequant_matmul_us']:.1f} us", flush=True)
    return row


def failures(row: dict) -> list:
    bad = []
    for v, r in row["variants"].items():
        errs = [r.get("max_rel_err", 0.0), r.get("residual_rel_err", 0.0)]
        if "error" in r or not all(e <= TOL for e in errs):
            bad.append((row["scheme"], row["N"], row["K"], v, r.get("error") or errs))
    return bad


def print_table(rows: list[dict], variants: list[str], M: int, iters: int) -> dict:
    """The table (us and ratio to cuBLAS per variant) and the best variant per scheme (geomean ratio)."""
    print(f"\nM={M}, us per call (median of {iters}, cold weights); (ratio) = time / cuBLAS bf16 time")
    print(f"{'scheme':17s} {'N x K':>12s} {'cuBLAS':>8s} {'deq+cuB':>14s} " + " ".join(f"{v:>15s}" for v in variants))
    ratios: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cub = r["cublas_bf16_us"]
        cells = []
        for v in variants:
            c = r["variants"].get(v)
            if c is None or "us" not in c:
                cells.append(f"{'-' if c is None else 'FAIL':>15s}")
                continue
            cells.append(f"{c['us']:8.1f} ({c['us'] / cub:4.2f})")
            ratios.setdefault((r["scheme"], v), []).append(c["us"] / cub)
        print(f"{r['scheme']:17s} {r['N']:>6d}x{r['K']:<5d} {cub:8.1f} {r['dequant_matmul_us']:7.1f} "
              f"({r['dequant_matmul_us'] / cub:4.2f}) " + " ".join(cells))
    best = {}
    for scheme in SCHEMES:
        n_rows = sum(r["scheme"] == scheme for r in rows)
        gm = {v: math.exp(statistics.fmean(math.log(x) for x in xs)) for (s, v), xs in ratios.items()
              if s == scheme and len(xs) == n_rows}
        if gm:
            v = min(gm, key=gm.get)
            best[scheme] = {"variant": v, "geomean_ratio": gm[v], "all": gm}
            print(f"best {scheme}: {v} (geomean time / cuBLAS {gm[v]:.3f}); "
                  + ", ".join(f"{k} {x:.3f}" for k, x in sorted(gm.items(), key=lambda t: t[1])))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/cutlass_mixed.json")
    ap.add_argument("--variants", default=",".join(tc_cutlass.VARIANTS), help="comma-separated VARIANTS names")
    ap.add_argument("--jobs", type=int, default=None, help="concurrent nvcc builds (default: CPU count)")
    ap.add_argument("--m", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in tc_cutlass.VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(tc_cutlass.VARIANTS)}")
    if not torch.cuda.is_available():
        print("cutlass_mixed: needs a CUDA GPU (sm_90); nothing to do here", file=sys.stderr)
        return 2
    cap = torch.cuda.get_device_capability()
    if cap != (9, 0):
        print(f"cutlass_mixed: the kernels are sm_90a only; this device is sm_{cap[0]}{cap[1]}", file=sys.stderr)
        return 2
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, nvcc {tc_cutlass.find_nvcc()}, "
          f"CUTLASS {tc_cutlass.find_cutlass()}", flush=True)
    t0 = time.time()
    builds = tc_cutlass.build_many(variants, jobs=args.jobs)
    build_info, failed = {}, []
    for v, b in builds.items():
        ptxas = tc_cutlass.ptxas_summary(b.path.with_suffix(".log").read_text()) \
            if b.path and b.path.with_suffix(".log").is_file() else {}
        build_info[v] = {"flags": tc_cutlass.VARIANTS[v], "seconds": b.seconds, "library": str(b.path),
                         "ptxas": ptxas, "error": b.error}
        print(f"build {v:9s} {b.seconds:6.1f}s {' '.join(tc_cutlass.VARIANTS[v]) or '(defaults)'}: "
              + (f"FAILED {b.error[-1500:]}" if b.error else "; ".join(f"{k}: {x}" for k, x in ptxas.items())),
              flush=True)
        if b.error:
            failed.append(("build", v, b.error[-500:]))
        else:
            tc_cutlass.load(v, b.path)
    print(f"builds: {time.time() - t0:.1f}s wall", flush=True)
    built = [v for v in variants if builds[v].path]

    torch.manual_seed(0)
    M = args.m
    rows = []
    for scheme in SCHEMES:
        group = GROUP if scheme == "int4_weight_only" else 0
        vs = [v for v in built if scheme in tc_cutlass.variant_schemes(v)]
        for i, (n, k) in enumerate(SHAPES):
            rows.append(measure(scheme, n, k, group, M, args.iters, vs, check_residual=i == 0))
            failed += failures(rows[-1])

    best = print_table(rows, built, M, args.iters)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "builds": build_info,
              "M": M, "iters": args.iters, "rows": rows, "best": best, "failed": failed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {args.out}")
    if failed:
        print(f"FAILED (build, error or accuracy > {TOL}): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
