"""Weight-only quantized linear (int8, int4 g128, fp8 on Hopper) and conv-BN-ReLU: tilecraft vs torch.

For each (scheme, M, K, N): tilecraft's kernels (best of a small config sweep incl. the heuristic default; every
config is checked against the float32 dequantized reference), bf16 cuBLAS (x @ w.t()), Inductor on the plain
dequantize-then-matmul code, and the bandwidth floor (quantized weight bytes / the device's copy bandwidth, measured
at the start by bench/peaks.py). Then the conv3x3-BN-ReLU residual block of ANCHORS.md (fp16, 32x64x56x56, eval):
eager vs Inductor vs tilecraft.compile.

    python bench/quant_linear.py [--out bench/results/quant_linear.json] [--sweep 12]
    python bench/quant_linear.py --dry-run      # CPU, Triton interpreter, tiny shapes (a smoke test)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zlib
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/peaks.py, also when loaded by path

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peaks  # noqa: E402 - bench/peaks.py: the device's measured copy bandwidth and matmul rate
import tilecraft  # noqa: E402
from tilecraft.quant import config_space, make_kernel, quantize_weight  # noqa: E402
from tilecraft.quant.formats import QuantError, dequantize, quantize_fp8_activation, unpack_int4  # noqa: E402


def bench_ms(fn, dry: bool) -> float:
    """Median ms: triton.testing.do_bench on GPU; a short wall-clock loop when interpreting (meaningless)."""
    if dry:
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))


def cold_gpu_us(make_fn, nbytes: int, rounds: int = 2) -> float:
    """GPU time per call with the weights cold in L2 (H100: 50 MB): make_fn(i) gives a call on the i-th copy of
    the weights; enough copies rotate that no call finds its weights cached. Kernel time by the torch profiler
    (every kernel of the call, a split-K's zeroing and cast included), so no CPU launch cost counts."""
    from tilecraft.testing import gpu_profile

    copies = max(2, -(-3 * 50 * 2**20 // max(nbytes, 1)))
    fns = [make_fn(i) for i in range(copies)]

    def sweep():
        for f in fns:
            f()

    return sum(t for _, t in gpu_profile(sweep, n=rounds)) / copies


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


def curated_configs(template: str, M: int, scheme: str = "") -> list[dict]:
    """Hand-picked points worth timing first: for the M=1 GEMV, few rows per program and long K chunks (many
    programs in flight, each streaming 2-8 KB); for the small-M GEMMs, thin M tiles with long K chunks (int4:
    long chunks need SCALE_W, the group scales applied to the weight tile)."""
    if template == "wq_gemv" and M == 1:
        return [{"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": st}
                for bn, bk, w, st in [(8, 1024, 4, 2), (4, 2048, 4, 1), (2, 2048, 4, 1), (4, 1024, 4, 1),
                                      (8, 1024, 4, 3), (8, 2048, 4, 2), (16, 512, 4, 2), (4, 4096, 4, 1),
                                      (8, 512, 4, 2), (16, 1024, 8, 2), (2, 4096, 4, 1)]]
    if template == "wq_gemv":
        return [{"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": 2}
                for bn, bk, w in [(16, 256, 4), (8, 512, 4)]]
    if template == "wq_gemm" and M <= 64:
        bm, sw = max(16, min(64, M)), scheme == "int4_weight_only"
        return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "num_warps": 4, "num_stages": st,
                 **({"SCALE_W": True} if sw and bk > 128 else {})}
                for bn, bk, sk, st in [(16, 256, 1, 4), (32, 256, 1, 3), (64, 128, 1, 4), (32, 128, 2, 4),
                                       (64, 256, 1, 3), (32, 512, 1, 2), (16, 512, 1, 3), (64, 128, 2, 3)]]
    return []


def sample_configs(kernel, n: int, seed: int) -> list[dict]:
    """The heuristic default, the curated points that the kernel accepts, then valid random points of its config
    space, n in all."""
    space, r = kernel.info["space"], random.Random(seed)
    out, seen = [], set()

    def add(c):
        key = tuple(sorted(c.items()))
        if key in seen or len(out) >= n:
            return
        seen.add(key)
        try:
            kernel.check_config(c)
        except QuantError:
            return
        out.append(c)

    add(kernel.default_config())
    for c in curated_configs(kernel.template, kernel.shapes["M"], kernel.scheme):
        add(c)
    for _ in range(n * 20):
        add({k: r.choice(v) for k, v in space.items()})
    return out


def linear_case(scheme, M, K, N, group, dtype, dev, n_cfg, dry, deadline) -> dict:
    g = torch.Generator(device="cpu").manual_seed(M * 7 + N)
    w = (torch.randn(N, K, generator=g) * 0.02)
    x = torch.randn(M, K, generator=g).to(dtype).to(dev)
    qw = quantize_weight(w, scheme, group)
    qw.qweight, qw.scales = qw.qweight.to(dev), qw.scales.to(dev)
    qw.zeros = qw.zeros.to(dev) if qw.zeros is not None else None
    w_deq = dequantize(qw)  # float32 [N, K]
    if scheme == "fp8":
        xq, xs = quantize_fp8_activation(x)
        ref = ((xq.float() * xs[:, None]) @ w_deq.t()).to(dtype)
        wbytes = N * K
    else:
        ref = (x.float() @ w_deq.t()).to(dtype)
        wbytes = N * K if scheme == "int8_weight_only" else N * K // 2
    row = {"scheme": scheme, "M": M, "K": K, "N": N, "group": group if scheme.startswith("int4") else 0,
           "floor_us": wbytes / peaks.measure(cuda=not dry)["bandwidth"] * 1e6}
    # ---- tilecraft kernels: sweep configs of the applicable templates
    templates = ["fp8_gemm"] if scheme == "fp8" else (
        ["wq_gemv", "wq_gemm"] if M <= 2 or (M <= 16 and scheme == "int4_weight_only") else ["wq_gemm"])
    tried, failed, timings = 0, 0, []
    for ti, template in enumerate(templates):
        k = make_kernel(scheme, M, N, K, dtype, group if scheme.startswith("int4") else 0, False, template,
                        fp8_per_row=(True, True))
        out = torch.empty(M, N, dtype=dtype, device=dev)
        dummy = torch.empty(1, dtype=torch.uint8, device=dev)
        if scheme == "fp8":
            args = [xq, qw.qweight, xs, qw.scales, torch.empty(1, dtype=dtype, device=dev), out]
        else:
            args = [x, qw.qweight, qw.scales, qw.zeros if qw.zeros is not None else dummy,
                    torch.empty(1, dtype=dtype, device=dev), out]
        per = max(1, n_cfg // len(templates)) if len(templates) > 1 else n_cfg
        if template == "wq_gemv" and M > 2:  # a multi-row GEMV: only its curated points (slow to compile)
            per = 1 + len(curated_configs(template, M, scheme))
        for cfg in sample_configs(k, per if time.perf_counter() < deadline else 1, seed=zlib.crc32(f'{scheme}/{template}/{M}'.encode())):
            tried += 1
            try:
                out.zero_()
                k.launch(args, cfg)
                err = rel_err(out, ref)
                if not err < (2e-2 if dtype != torch.float32 else 1e-4):
                    failed += 1
                    continue
                ms = bench_ms(lambda: k.launch(args, cfg), dry)
            except Exception as e:  # noqa: BLE001 - a config that does not compile or run is skipped
                failed += 1
                if tried == 1:
                    print(f"  default config failed for {scheme} M={M}: {type(e).__name__}: {e}", flush=True)
                continue
            timings.append((ms * 1e3, template, cfg, err, k, args))
    if timings:
        timings.sort(key=lambda r: r[0])
        row["top_configs"] = [{"us": t, "template": tp, "config": c} for t, tp, c, *_ in timings[:6]]
        if not dry:  # the few fastest by do_bench, re-timed with cold weights (what a decode step sees): the
            # winner is the fastest cold (do_bench's launch-inclusive times differ by less than their noise)
            def cold(kb, ab, cb):
                def on_copy(i):
                    a = list(ab)
                    a[1] = ab[1].clone()  # the quantized weight; scales and zeros stay shared (small)
                    return lambda: kb.launch(a, cb)

                return cold_gpu_us(on_copy, ab[1].numel() * ab[1].element_size())

            colds = [(cold(kb, ab, cb), us, tp, cb, err) for us, tp, cb, err, kb, ab in timings[:4]]
            for entry, c in zip(row["top_configs"], colds):
                entry["cold_us"] = c[0]
            c_us, us, tp, cb, err = min(colds, key=lambda r: r[0])
            row.update(tilecraft_us=us, template=tp, config=cb, rel_err=err, tilecraft_cold_us=c_us)
        else:
            us, tp, cb, err = timings[0][:4]
            row.update(tilecraft_us=us, template=tp, config=cb, rel_err=err)
    row.update(configs_tried=tried, configs_failed=failed)
    # ---- bf16 cuBLAS on the float weight
    wb = w.to(dev).to(dtype)
    row["cublas_us"] = bench_ms(lambda: x @ wb.t(), dry) * 1e3
    if not dry:
        row["cublas_cold_us"] = cold_gpu_us(lambda i: (lambda wc: (lambda: x @ wc.t()))(wb.clone()), wb.numel() * 2)
    # ---- Inductor on the plain dequantize-then-matmul code
    if not dry and scheme != "fp8":
        try:
            if scheme == "int8_weight_only":
                fn = torch.compile(lambda x, q, s: x @ (q.to(x.dtype) * s[:, None].to(x.dtype)).t())
                call = lambda: fn(x, qw.qweight, qw.scales)  # noqa: E731
            else:
                def deq_mm(x, q, s, z):
                    codes = torch.stack([q & 15, q >> 4], dim=-1).reshape(N, K).to(x.dtype)
                    wd = (codes.reshape(N, K // group, group) - z[..., None].to(x.dtype)) * s[..., None].to(x.dtype)
                    return x @ wd.reshape(N, K).t()
                fn = torch.compile(deq_mm)
                call = lambda: fn(x, qw.qweight, qw.scales, qw.zeros)  # noqa: E731
            row["inductor_rel_err"] = rel_err(call(), ref)
            row["inductor_us"] = bench_ms(call, dry) * 1e3
        except Exception as e:  # noqa: BLE001
            row["inductor_error"] = f"{type(e).__name__}: {e}"[:200]
    return row


class ConvBNReLUBlock(nn.Module):
    """relu(x + bn(conv3x3(x))): the conv-BN-ReLU residual block of ANCHORS.md."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


def conv_case(dev, dry) -> dict:
    shape = (2, 8, 8, 8) if dry else (32, 64, 56, 56)
    dtype = torch.float32 if dry else torch.float16
    torch.manual_seed(0)
    model = ConvBNReLUBlock(shape[1]).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model = model.to(dev, dtype)
    x = torch.randn(*shape, device=dev, dtype=dtype)
    n, c, h, w = shape  # floor: the 3x3 conv's FLOPs, or x read and the result written, on this device
    floor = peaks.floor_ms(2 * n * c * h * w * 2, 2 * 9 * n * c * c * h * w, peaks.measure(cuda=not dry))
    row = {"workload": f"convbnrelu_{'x'.join(map(str, shape))}", "floor_ms": None if dry else floor}
    with torch.no_grad():
        ref = model(x)
        row["eager_ms"] = bench_ms(lambda: model(x), dry)
        if not dry:
            ind = torch.compile(model)
            row["inductor_rel_err"] = rel_err(ind(x), ref)
            row["inductor_ms"] = bench_ms(lambda: ind(x), dry)
        tc = tilecraft.compile(model)
        row["tilecraft_rel_err"] = rel_err(tc(x), ref)
        row["tilecraft_ms"] = bench_ms(lambda: tc(x), dry)
        row["tilecraft_ops"] = tc.report.graphs[0].ops if tc.report.graphs else {}
        if not dry:  # GPU time per call and its kernels (torch profiler): the pass's layout choice vs forced NHWC
            from tilecraft.testing import gpu_profile

            torch._dynamo.reset()
            tcl = tilecraft.compile(model, channels_last=True)
            row["tilecraft_nhwc_rel_err"] = rel_err(tcl(x), ref)
            row["tilecraft_nhwc_ms"] = bench_ms(lambda: tcl(x), dry)
            for label, fn in (("inductor", ind), ("tilecraft", tc), ("tilecraft_nhwc", tcl)):
                prof = gpu_profile(lambda: fn(x))  # noqa: B023
                row[f"{label}_gpu_ms"] = sum(t for _, t in prof) / 1e3
                row[f"{label}_kernels_us"] = [(k[:60], round(t, 1)) for k, t in prof]
    return row


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "quant_linear.json"))
    ap.add_argument("--dry-run", action="store_true", help="CPU interpreter, tiny shapes")
    ap.add_argument("--sweep", type=int, default=12, help="configs per problem (incl. the default)")
    ap.add_argument("--schemes", default="int8,int4,fp8", help="comma list of int8, int4, fp8")
    ap.add_argument("--ms", default="", help="comma list of M values (default 1,16,64)")
    ap.add_argument("--no-conv", action="store_true")
    ap.add_argument("--budget-s", type=float, default=240.0, help="after this, only default configs are timed")
    args = ap.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run", file=sys.stderr)
        return 2
    dev = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    print(peaks.describe(peaks.measure(cuda=not dry)), flush=True)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    shapes = [(64, 48)] if dry else [(4096, 4096), (4096, 11008)]
    ms_list = [int(m) for m in args.ms.split(",")] if args.ms else ([1, 16, 64] if not dry else [1, 16, 32])
    n_cfg = 3 if dry else args.sweep
    schemes = [("int8_weight_only", 0), ("int4_weight_only", 32 if dry else 128)]
    hopper = not dry and torch.cuda.get_device_capability() >= (9, 0)
    if hopper:
        schemes.append(("fp8", 0))
    schemes = [s for s in schemes if s[0].split("_")[0] in args.schemes.split(",")]
    rows = []
    for K, N in shapes:
        for scheme, group in schemes:
            for M in ms_list:
                t0 = time.perf_counter()
                row = linear_case(scheme, M, K, N, group, dtype, dev, n_cfg, dry, deadline)
                row["bench_s"] = time.perf_counter() - t0
                rows.append(row)
                print(f"done {scheme} M={M} K={K} N={N} in {row['bench_s']:.1f}s", flush=True)
    conv = None if args.no_conv else conv_case(dev, dry)
    device = "cpu (interpreter)" if dry else torch.cuda.get_device_name()
    result = {"device": device, "torch": torch.__version__, "dry_run": dry, "peaks": peaks.measure(cuda=not dry),
              "linear": rows, "conv": conv,
              "seconds": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out}; device {device}{' (timings meaningless: interpreter)' if dry else ''}")
    print(f"\n{'scheme':<8} {'M':>3} {'KxN':>10} {'tilecraft us':>12} {'x floor':>8} {'cuBLAS us':>10} "
          f"{'Inductor us':>11} {'floor us':>9} {'template':>9} {'rel err':>8} {'cold us':>8} {'x floor':>7} {'cuBLAS cold':>11}")
    for r in rows:
        t = r.get("tilecraft_us")
        name = r["scheme"].split("_")[0] + (f"g{r['group']}" if r["group"] else "")
        kn = f"{r['K']}x{r['N']}"
        ratio = t / r["floor_us"] if t else None
        print(f"{name:<8} {r['M']:>3} {kn:>10} {fmt(t):>12} {fmt(ratio, '.2f'):>8} {fmt(r['cublas_us']):>10} "
              f"{fmt(r.get('inductor_us')):>11} {fmt(r['floor_us']):>9} {r.get('template', '-'):>9} "
              f"{fmt(r.get('rel_err'), '.1e'):>8} {fmt(r.get('tilecraft_cold_us')):>8} "
              f"{fmt(r['tilecraft_cold_us'] / r['floor_us'] if r.get('tilecraft_cold_us') else None, '.2f'):>7} "
              f"{fmt(r.get('cublas_cold_us')):>11}")
    c = conv
    if c:
        print(f"\n{c['workload']}: eager {fmt(c['eager_ms'], '.4f')} ms, Inductor {fmt(c.get('inductor_ms'), '.4f')} ms, "
              f"tilecraft {fmt(c['tilecraft_ms'], '.4f')} ms (rel err {c['tilecraft_rel_err']:.1e}), "
              f"floor {fmt(c['floor_ms'], '.4f')} ms")
        for label in ("inductor", "tilecraft", "tilecraft_nhwc"):
            if f"{label}_gpu_ms" in c:
                print(f"  {label:15} GPU {c[label + '_gpu_ms']:.4f} ms per call: "
                      + ", ".join(f"{k} {t}" for k, t in c[label + "_kernels_us"]))
    return 0 if all("tilecraft_us" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
