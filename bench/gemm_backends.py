"""GEMM backends on the linear layers of issue 12's models: cuBLAS against tilecraft's two matmul variants.

    python bench/gemm_backends.py [--only gpt2_fc1,swiglu] [--out bench/results/gemm_backends.json] [--dry-run]

Cases (bf16): the linears of GPT-2 small b8x512 and BERT-base b16x256 (M=4096, d=768: QKV, attention output,
FC1+GELU, FC2), of the LLaMA-style 492M b4x512 (M=2048, d=2048: Q/O, GQA K/V to 512, SwiGLU gate+up to 5632,
down), the ANCHORS linear+GELU 8192x4096x4096 and SwiGLU 4096x2048x5632 (gate and up), and one batched
q @ k^T (96 x 512x64x512, scaled: the persistent variant's 3-D descriptors). Backends, in one
process:
  cublas        torch.addmm / torch.mm alone (SwiGLU: one GEMM with gate and up stacked), no epilogue
  cublas+epi    the same, then the epilogue as one tilecraft pointwise kernel (Inductor's default does this:
                cuBLAS, then one fused Triton kernel); cases without an epilogue (bias only) have none
  cublas+eager  the same, then the epilogue in eager torch ops
  aten          tilecraft's ATen backend for the same kernel (BACKEND=aten: cuBLAS + its generated epilogue)
  grouped ...   tilecraft's grouped template (epilogue fused): its default config and a few others
  hopper ...    its persistent variant with TMA descriptor loads: a small sweep (plus one without TMA and one
                with warp specialization, which Triton 3.6 documents for Blackwell only)
Every backend and config is first checked against torch (bf16 tolerance); a config that fails to compile or
gives a wrong result is reported, not timed. Times are `triton.testing.do_bench` medians (ms, L2 flushed);
TFLOP/s; "% peak" against the device's bf16 matmul rate measured first in the same run (torch.mm 8192^3);
"vs base" = base ms / ms, where base is cublas+epi (cublas for bias-only cases): > 1 beats cuBLAS plus a separate
epilogue kernel. Configs compile in parallel worker processes first (bench/tune_gemm.py's `precompile`). The
table is printed last; JSON goes to --out. `--dry-run`: tiny shapes on the CPU interpreter, no timing claims.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import tilecraft  # noqa: E402
from tilecraft.codegen.matmul import default_config  # noqa: E402
from tilecraft.testing import assert_close  # noqa: E402

# name, models, M, K, N, kind ("linear": + bias; "mm": no bias; "gelu": + bias, GELU; "swiglu": silu(x Wg) * x Wu)
CASES = [
    ("gpt2_qkv", "GPT-2", 4096, 768, 2304, "linear"),
    ("gpt2_bert_attn_out", "GPT-2, BERT (Q, K, V, out)", 4096, 768, 768, "linear"),
    ("gpt2_bert_fc1_gelu", "GPT-2, BERT", 4096, 768, 3072, "gelu"),
    ("gpt2_bert_fc2", "GPT-2, BERT", 4096, 3072, 768, "linear"),
    ("llama_q_o", "LLaMA-492M", 2048, 2048, 2048, "mm"),
    ("llama_kv", "LLaMA-492M (GQA)", 2048, 2048, 512, "mm"),
    ("llama_gate_up", "LLaMA-492M", 2048, 2048, 5632, "swiglu"),
    ("llama_down", "LLaMA-492M", 2048, 5632, 2048, "mm"),
    ("linear_gelu_8192", "ANCHORS", 8192, 4096, 4096, "gelu"),
    ("swiglu_4096", "ANCHORS", 4096, 2048, 5632, "swiglu"),
    ("attn_scores_bmm", "eager attention, 96 heads x 512 (3-D descriptors)", 512, 64, 512, "bmm"),
]
BMM_BATCH = {False: 96, True: 2}  # heads x batch; dry run
DRY = {"M": 40, "K": 48, "N": 72}  # every case's shape on the interpreter

G8 = {"GROUP_M": 8}
GROUPED = [  # (label, config) on top of the grouped default
    ("128x256x64 w8 s3", {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3}),
    ("128x128x64 w8 s4", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 4}),
    ("128x128x64 w4 s4", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4}),
]
TMA = {"PERSISTENT": 1, "TMA": 1, "FLATTEN": 1}
HOPPER = [
    ("128x256x64 w8 s3", {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3, **TMA}),
    ("128x256x64 w8 s3 subtile", {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3,
                                  **TMA, "EPILOGUE_SUBTILE": 1}),
    ("128x256x64 w8 s4", {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8, "num_stages": 4, **TMA}),
    ("128x128x64 w8 s4", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 4, **TMA}),
    ("128x128x64 w4 s4", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4, **TMA}),
    ("128x128x128 w8 s3", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "num_warps": 8, "num_stages": 3, **TMA}),
    ("64x256x64 w4 s4", {"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4, **TMA}),
    ("64x128x64 w4 s4", {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 4, "num_stages": 4, **TMA}),
    ("128x256x64 w8 s3 no-flatten", {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "num_warps": 8,
                                     "num_stages": 3, **TMA, "FLATTEN": 0}),
    ("128x128x64 w8 s4 no-flatten", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8,
                                     "num_stages": 4, **TMA, "FLATTEN": 0}),
    ("128x128x64 w8 s4 no-TMA", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 4,
                                 "PERSISTENT": 1, "FLATTEN": 1}),
    ("128x128x64 w8 s4 warp-spec", {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8,
                                    "num_stages": 4, **TMA, "FLATTEN": 0, "WARP_SPECIALIZE": 1}),
]


def case_fns(kind: str, M: int, K: int, N: int, dev: str, batch: int):
    """(x, the layer as torch code, its epilogue as torch code on the GEMM output or None, cuBLAS GEMM(out))."""
    g = torch.Generator().manual_seed(0)
    bf = torch.bfloat16
    x = torch.randn(M, K, generator=g).to(dev, bf)
    w = (torch.randn(N, K, generator=g) / K ** 0.5).to(dev, bf)
    b = torch.randn(N, generator=g).to(dev, bf)
    if kind == "bmm":  # q @ k^T per head: k is [B, N, K], read transposed
        q = torch.randn(batch, M, K, generator=g).to(dev, bf)
        kt = torch.randn(batch, N, K, generator=g).to(dev, bf).transpose(1, 2)
        return (q, lambda q: torch.bmm(q, kt) * 0.125, None, lambda out: torch.bmm(q, kt, out=out), N)
    if kind == "swiglu":
        wu = (torch.randn(N, K, generator=g) / K ** 0.5).to(dev, bf)
        wgu_t = torch.cat([w, wu]).t()  # one GEMM for gate and up, as a cuBLAS backend would run it
        return (x, lambda x: F.silu(F.linear(x, w)) * F.linear(x, wu),
                lambda h: F.silu(h[:, :N]) * h[:, N:], lambda out: torch.mm(x, wgu_t, out=out), 2 * N)
    wt = w.t()
    gemm = (lambda out: torch.mm(x, wt, out=out)) if kind == "mm" else (lambda out: torch.addmm(b, x, wt, out=out))
    layer = (lambda x: F.linear(x, w)) if kind == "mm" else (lambda x: F.linear(x, w, b))
    if kind == "gelu":
        return x, (lambda x: F.gelu(F.linear(x, w, b))), F.gelu, gemm, N
    return x, layer, None, gemm, N


def one_kernel(compiled, template: str):
    ks = [k for gr in compiled.report.graphs for k in gr.kernels]
    if len(ks) != 1 or ks[0].template != template:
        raise RuntimeError(f"expected one {template} kernel, got {[k.name for k in ks]}")
    return ks[0]


def timer(dry: bool):
    if dry:
        def t(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        return t
    from triton.testing import do_bench

    return lambda fn: do_bench(fn, warmup=10, rep=40, return_mode="median")


def measure_peak(dev: str, dry: bool) -> float | None:
    """The device's bf16 matmul rate, TFLOP/s: the best of torch.mm at 8192^3 (and 4096^3)."""
    if dry:
        return None
    from triton.testing import do_bench

    best = 0.0
    for n in (4096, 8192):
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        ms = do_bench(lambda: torch.mm(a, b), warmup=25, rep=200, return_mode="median")
        best = max(best, 2 * n ** 3 / ms / 1e9)
    return best


class Case:
    """One case: its torch layer, the cuBLAS backends (measured at once) and the tilecraft kernel with the
    configs to try (measured after every case's configs are compiled)."""

    def __init__(self, case, dev: str, dry: bool, configs: list, tmr):
        self.name, self.models, M, K, N, self.kind = case
        if dry:
            M, K, N = DRY["M"], DRY["K"], DRY["N"]
        self.M, self.K, self.N, self.dev, self.tmr = M, K, N, dev, tmr
        batch = BMM_BATCH[dry] if self.kind == "bmm" else 1
        self.x, self.layer, epi, gemm, gemm_n = case_fns(self.kind, M, K, N, dev, batch)
        self.flops = 2.0 * M * N * K * (2 if self.kind == "swiglu" else batch)
        with torch.no_grad():
            self.expected = self.layer(self.x)
        self.rows = []
        h = torch.empty(*((batch,) if self.kind == "bmm" else ()), M, gemm_n, device=dev, dtype=torch.bfloat16)
        with torch.no_grad():
            pre = gemm(torch.empty_like(h)).clone()  # reference for the GEMM alone: torch's own result
        label = "addmm" if self.kind in ("linear", "gelu") else "bmm" if self.kind == "bmm" else "mm"
        self.add("cublas", label, lambda: gemm(h), lambda: gemm(h),
                 ref=pre if epi is not None or self.kind == "bmm" else self.expected)
        if epi is not None:
            with torch.no_grad():
                ce = tilecraft.compile(epi, cuda_graphs=False)
                ce(gemm(h))
            ek = one_kernel(ce, "pointwise")
            eargs = [torch.empty_strided(a.shape, a.strides, dtype=a.dtype, device=dev) if a.is_output else h
                     for a in ek.args]
            (outp,) = ek.out_positions

            def cublas_epi():
                gemm(h)
                ek.launch(eargs)

            self.add("cublas+epi", "+ tilecraft pointwise", cublas_epi, lambda: (cublas_epi(), eargs[outp])[1])
            self.add("cublas+eager", "+ torch ops", lambda: epi(gemm(h)), lambda: epi(gemm(h)))
        torch._dynamo.reset()
        # generated kernels (not the ATen backend), no CUDA graph: each config below must really run
        self.compiled = tilecraft.compile(self.layer, cuda_graphs=False, matmul="triton")
        with torch.no_grad():
            self.compiled(self.x)
        k = self.kernel = one_kernel(self.compiled, "matmul")
        k.grouped = None  # a failing persistent config must fail here, not quietly run the grouped variant
        grouped_default = {**default_config(M, N, K, torch.bfloat16, dual=self.kind == "swiglu"), "BACKEND": "triton"}
        todo = [("grouped", "default " + cfg_label(grouped_default), grouped_default)]
        if k.aten is not None:  # the ATen backend as tilecraft runs it: cuBLAS + the generated epilogue kernel
            todo.append(("aten", "tilecraft BACKEND=aten", {**grouped_default, "BACKEND": "aten"}))
        if k.default_config() != grouped_default:
            todo.append(("hopper" if k.default_config()["PERSISTENT"] else "grouped",
                         "default " + cfg_label(k.default_config()), k.default_config()))
        for backend, label, cfg in configs:
            if self.kind == "swiglu" and cfg.get("BLOCK_N", 0) >= 256:
                continue  # two 128x256 fp32 accumulators spill
            todo.append((backend, label, {**grouped_default, **G8, **cfg}))
        if dry:  # interpreter: small tiles; the default and the first two configs of each generated backend
            keep = todo[:1] + [t for b in ("aten", "grouped", "hopper") for t in [t for t in todo[1:] if t[0] == b][:2]]
            todo = [(b, lab, {**cfg, "BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}) for b, lab, cfg in keep]
        self.todo = todo

    def add(self, backend, label, fn, check, config=None, ref=None):
        row = {"case": self.name, "models": self.models, "M": self.M, "K": self.K, "N": self.N, "kind": self.kind,
               "backend": backend, "label": label, "config": config, "flops": self.flops}
        try:
            got = check()
            assert_close(got, self.expected if ref is None else ref, scale=3.0 if self.kind == "swiglu" else 1.0)
            row["ms"] = self.tmr(fn)
            row["tflops"] = self.flops / row["ms"] / 1e9
        except Exception as e:  # noqa: BLE001 - a failing config is a result, not the end of the run
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        self.rows.append(row)
        print(f"  {self.name} {backend} {label}: " + (f"{row['ms']:.4f} ms" if "ms" in row else row["error"]),
              flush=True)

    def measure_kernel(self) -> None:
        k, c = self.kernel, self.compiled
        args = k.make_args(self.dev, seed=0)
        for backend, label, cfg in self.todo:
            def check(cfg=cfg):
                k.launch(args, cfg)  # a config that fails to compile raises here, with Triton's message
                k.config = dict(cfg)
                steps = c.report.graphs[0].program.steps
                for s in steps:  # a failed launch would run torch from then on: start each config afresh
                    s.failed = False
                with torch.no_grad():
                    out = c(self.x)
                if any(s.failed for s in steps):
                    raise RuntimeError("the kernel failed to launch in the compiled program")
                return out
            self.add(backend, label, lambda cfg=cfg: k.launch(args, cfg), check, cfg)


def precompile_all(cases: list[Case], workers: int) -> float:
    """Compile every case's configs in worker processes (Triton's disk cache), one config per task."""
    from multiprocessing import get_context

    from tune_gemm import _precompile_worker

    t0 = time.perf_counter()
    tasks = [(c.kernel, [cfg]) for c in cases for _, _, cfg in c.todo]
    with get_context("spawn").Pool(workers) as pool:
        pool.map(_precompile_worker, tasks, chunksize=1)
    return time.perf_counter() - t0


def cfg_label(c: dict) -> str:
    s = f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}"
    return s + (" persistent" if c.get("PERSISTENT") else "") + (" TMA" if c.get("TMA") else "")


def summarize(rows: list[dict], peak: float | None) -> dict:
    """Per case: the base (cublas+epi, else cublas), the best grouped and best hopper rows; each row's ratio."""
    out = {}
    for name in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == name and "ms" in r]
        by = {r["backend"]: r for r in mine if r["backend"] in ("cublas", "cublas+epi")}
        base = (by.get("cublas+epi") or by.get("cublas") or {}).get("ms")
        for r in mine:
            r["vs_base"] = base / r["ms"] if base else None
            r["pct_peak"] = 100 * r["tflops"] / peak if peak else None
        best = {}
        for b in ("aten", "grouped", "hopper"):
            cand = [r for r in mine if r["backend"] == b]
            if cand:
                w = min(cand, key=lambda r: r["ms"])
                best[b] = {"label": w["label"], "ms": w["ms"], "vs_base": w["vs_base"], "config": w["config"]}
        out[name] = {"base_ms": base, "cublas_ms": by.get("cublas", {}).get("ms"), **best}
    return out


def print_table(rows, summary, peak, dry):
    print("\nDRY RUN (CPU interpreter): times are meaningless" if dry else
          f"\nbf16 matmul peak measured (torch.mm): {peak:.1f} TFLOP/s")
    hdr = ["case", "backend", "config", "ms", "TFLOP/s", "% peak", "vs base"]
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for r in rows:
        if "ms" not in r:
            print(f"{r['case']} | {r['backend']} | {r['label']} | FAILED: {r['error'][:80]} | | |")
            continue
        pct = f"{r['pct_peak']:.0f}%" if r.get("pct_peak") else "-"
        vs = f"{r['vs_base']:.3f}" if r.get("vs_base") else "-"
        print(f"{r['case']} | {r['backend']} | {r['label']} | {r['ms']:.4f} | {r['tflops']:.1f} | {pct} | {vs}")
    print("\nbest per case (vs base = base ms / ms; base = cuBLAS + one fused epilogue kernel):")
    print("case | base ms | best grouped | vs base | best hopper | vs base")
    print("--- | --- | --- | --- | --- | ---")
    for name, s in summary.items():
        g, h = s.get("grouped", {}), s.get("hopper", {})
        f = (lambda v: f"{v:.3f}" if v else "-")
        print(f"{name} | {f(s['base_ms'])} | {g.get('label', '-')} ({f(g.get('ms'))}) | {f(g.get('vs_base'))} | "
              f"{h.get('label', '-')} ({f(h.get('ms'))}) | {f(h.get('vs_base'))}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated case names (substrings)")
    p.add_argument("--out", default="bench/results/gemm_backends.json")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU interpreter, no timing claims")
    p.add_argument("--no-hopper", action="store_true", help="skip the persistent/TMA sweep")
    p.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes that compile each case's configs first")
    args = p.parse_args(argv)
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    dev = "cpu" if dry else "cuda"
    t0 = time.perf_counter()
    peak = measure_peak(dev, dry)
    configs = [("grouped", lab, cfg) for lab, cfg in GROUPED]
    if not args.no_hopper:
        configs += [("hopper", lab, cfg) for lab, cfg in HOPPER]
    only = [s for s in args.only.split(",") if s]
    cases = [c for c in CASES if not only or any(s in c[0] for s in only)]
    built = []
    for case in cases:
        print(f"== {case[0]} ({case[1]}): M={case[2]} K={case[3]} N={case[4]} {case[5]} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
        built.append(Case(case, dev, dry, configs, timer(dry)))
    if not dry and args.workers > 1:
        n = sum(len(c.todo) for c in built)
        print(f"compiling {n} configs in {args.workers} processes ...", flush=True)
        print(f"compiled in {precompile_all(built, args.workers):.0f} s [{time.perf_counter() - t0:.0f} s]",
              flush=True)
    for c in built:
        print(f"== {c.name}: tilecraft configs [{time.perf_counter() - t0:.0f} s]", flush=True)
        c.measure_kernel()
    rows = [r for c in built for r in c.rows]
    summary = summarize(rows, peak)
    meta = {"device": "cpu-interpreter" if dry else torch.cuda.get_device_name(), "dry_run": dry,
            "torch": torch.__version__, "triton": __import__("triton").__version__, "peak_bf16_tflops": peak,
            "seconds": time.perf_counter() - t0}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "rows": rows}, f, indent=1)
    print_table(rows, summary, peak, dry)
    print(f"\n{len(rows)} rows in {meta['seconds']:.0f} s; JSON: {args.out}")
    wrong = [r for r in rows if "error" in r and "AssertionError" in r["error"]]
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
