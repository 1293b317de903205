"""Whole HF models: eager vs Inductor (default, optionally max-autotune) vs tilecraft, one process.

    python bench/models.py [--models gpt2,llama_b4,...] [--max-autotune] [--quant int8,int4]
                           [--tc-opts key=value,...] [--variants default,cuda_graphs=True]
                           [--out bench/results/models.json] [--budget-s S]
    python bench/models.py --dry-run              # tiny configs on the CPU (Triton interpreter, fp32)
    python bench/models.py --table a.json b.json  # one table from the JSON of split runs

The benchmark every performance decision is judged by (issues 12, 13, 15). Models are built from configs in code
(random weights, no download), bf16, eval, `use_cache=False`, torch.no_grad(), on random token ids:
  gpt2      GPT-2 small (12 layers, d=768), batch 8 x 512
  llama_b4  LLaMA-style 492M (8 layers, d=2048, GQA 16/4 heads, SwiGLU 5632, vocab 32000), batch 4 x 512
  llama_b1  the same model, batch 1 x 16 (a decode-sized step)
  qwen2     Qwen2-style (4 layers, d=1024, GQA 16/4, qkv bias, intermediate 2816, vocab 32000), batch 4 x 512
  bert      BERT-base (BertModel: 12 layers, d=768), batch 16 x 256
  opt       OPT-style (8 layers, d=1024, ffn 4096), batch 4 x 512
  neox      GPT-NeoX-style (6 layers, d=1024, ffn 4096, rotary 25%), batch 4 x 512
Per model and backend: GPU time per call (torch profiler: the sum of the device kernels' times, mean of 5 calls;
the median of `--rounds` rounds that profile the model's backends in alternating order, since position alone
moved identical cuBLAS kernels by 2-4%),
wall time per call (back-to-back calls after warm-up, synchronized at the ends, median of 3 loops), compile
seconds (the first call), relative error of the output (logits; BERT: last hidden state) against eager bf16,
max |got - eager| / max |eager| in float32, the eager row against a float32 copy of the model (bf16's own
noise), device ops per call (profiler: kernels, memsets and copies) and, for tilecraft, its generated kernels
and the ops that ran through torch (compiled.report). `--quant` adds the LLaMA models through
`tilecraft.compile(copy, quantize=...)`, their error against eager bf16.

Floor: the device's copy bandwidth and bf16 matmul rate are measured at the start (bench/peaks.py). A model's
work is approximated as FLOPs = 2 x (parameters outside embedding tables, plus a tied LM head) x tokens +
attention 4 x batch x T^2 x d per layer (halved when causal), bytes = those parameters read once (quantized
rows: int8 1 byte, int4 0.5 + group scales/zeros per Linear weight) + the output written once. The floor is the
larger of bytes / bandwidth and FLOPs / matmul rate; '% floor' = floor / GPU time.
"""
from __future__ import annotations

import argparse
import ast
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import peaks  # noqa: E402
import tilecraft  # noqa: E402

T0 = time.perf_counter()
QUANT = {"int8": "int8_weight_only", "int4": "int4_weight_only"}
QUANT_MODELS = ("llama_b1", "llama_b4")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- models
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, vocab_size=128, max_position_embeddings=64)
LLAMA = ("LlamaForCausalLM", "LlamaConfig",
         dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=8, num_attention_heads=16,
              num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
         dict(TINY, intermediate_size=64, num_key_value_heads=2))
# name: (model class, config class, config, --dry-run config, (batch, tokens), --dry-run (batch, tokens), causal);
# only config fields that transformers 5.17 (the GPU machine) and 5.24 both have
MODELS = {
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {},  # the defaults are GPT-2 small
             dict(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64, bos_token_id=0, eos_token_id=0),
             (8, 512), (2, 16), True),
    "llama_b4": (*LLAMA, (4, 512), (2, 16), True),
    "llama_b1": (*LLAMA, (1, 16), (1, 8), True),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config",
              dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                   num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048),
              dict(TINY, intermediate_size=64, num_key_value_heads=2), (4, 512), (2, 16), True),
    "bert": ("BertModel", "BertConfig", {}, dict(TINY, intermediate_size=64), (16, 256), (2, 16), False),  # base
    "opt": ("OPTForCausalLM", "OPTConfig",
            dict(hidden_size=1024, num_hidden_layers=8, ffn_dim=4096, num_attention_heads=16, vocab_size=50272,
                 max_position_embeddings=2048, word_embed_proj_dim=1024),
            dict(TINY, ffn_dim=64, word_embed_proj_dim=32), (4, 512), (2, 16), True),
    "neox": ("GPTNeoXForCausalLM", "GPTNeoXConfig",
             dict(hidden_size=1024, num_hidden_layers=6, num_attention_heads=16, intermediate_size=4096,
                  vocab_size=50304, max_position_embeddings=2048),
             dict(TINY, intermediate_size=64), (4, 512), (2, 16), True),
}


def build(name: str, dry: bool, dev: str):
    """(float32 model on dev in eval mode, token ids [B, T], config), seeded: every run sees the same weights."""
    import transformers

    cls_name, cfg_name, kw, dry_kw, shape, dry_shape, _ = MODELS[name]
    cls, cfg = getattr(transformers, cls_name), getattr(transformers, cfg_name)(**(dry_kw if dry else kw))
    cfg.use_cache = False
    torch.manual_seed(0)
    with torch.device(dev):  # random init on the GPU: seconds faster than on the CPU for the 492M model
        model = cls(cfg).eval()
    b, t = dry_shape if dry else shape
    ids = torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(1)).to(dev)
    return model, ids, cfg


def output_of(out) -> torch.Tensor:
    """The tensor compared across backends: logits, or the first output (BERT's last hidden state)."""
    if getattr(out, "logits", None) is not None:
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else out


def rel_err(got, ref) -> float:
    """max |got - ref| / max |ref|, in float32."""
    g, r = output_of(got).float(), output_of(ref).float()
    return ((g - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()


def work(model, cfg, batch, tokens, causal, scheme: str | None = None) -> tuple[float, float]:
    """(bytes, FLOPs) of one call, approximately (see the module docstring)."""
    emb = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    params = {id(p): p for p in model.parameters() if id(p) not in emb}
    if out_emb is not None and id(out_emb.weight) in emb:  # a tied LM head: the table is read whole
        params[id(out_emb.weight)] = out_emb.weight
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    n = sum(p.numel() for p in params.values())
    per_elem = {None: None, "int8": 1.0, "int4": 0.5 + 4 / 128}[scheme]  # int4: bf16 scale + zero per 128
    nbytes = sum(p.numel() * (per_elem if per_elem and i in linear else p.element_size()) for i, p in params.items())
    out_features = getattr(cfg, "vocab_size") if out_emb is not None else cfg.hidden_size
    nbytes += batch * tokens * out_features * next(model.parameters()).element_size()
    attn = 4 * batch * tokens**2 * cfg.hidden_size * cfg.num_hidden_layers * (0.5 if causal else 1.0)
    return float(nbytes), float(2 * n * batch * tokens + attn)


# ---------------------------------------------------------------- measurement
def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def wall_ms(fn, cuda: bool) -> float:
    """Wall time per call of back-to-back calls (CPU launch cost included), after warm-up: median of 3 loops."""
    if not cuda:  # the interpreter: one call, a smoke test of the path
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    for _ in range(2):
        fn()
    sync(cuda)
    t0 = time.perf_counter()
    fn()
    sync(cuda)
    n = max(3, min(50, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    loops = []
    for _ in range(3):
        sync(cuda)
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync(cuda)
        loops.append((time.perf_counter() - t0) / n)
    return statistics.median(loops) * 1e3


TOP = [8]  # kernels kept per row (--top)


def profile(fn, n: int = 5) -> tuple[float, float, list]:
    """(GPU ms per call, device ops per call, top kernels [(name, µs per call)]) by the torch profiler."""
    from tilecraft.testing import gpu_profile

    rows = gpu_profile(fn, n, counts=True)
    return (sum(us for _, us, _ in rows) / 1e3, sum(c for _, _, c in rows),
            [(k[:160], round(us, 1), c) for k, us, c in rows[:TOP[0]]])


def span(fn) -> float:
    """GPU ms per call, first kernel's start to last kernel's end (tilecraft.testing.gpu_span_ms; median of 3)."""
    from tilecraft.testing import gpu_span_ms

    return statistics.median(gpu_span_ms(fn) for _ in range(3))


def torch_ops(report) -> dict[str, int]:
    """Ops of the compiled graphs that run through torch on every call instead of a generated kernel, by op
    (views, which launch nothing, and steps on parameters alone, cached after the first call, left out); a graph
    that fell back whole counts as '<whole graph>'."""
    from tilecraft.ir.ops import REGISTRY

    ops: dict[str, int] = {}

    def add(name):
        ops[name] = ops.get(name, 0) + 1

    for g in report.graphs:
        if g.error:
            add("<whole graph>")
            continue
        static = getattr(g.program, "_static_steps", None) or set()
        for i, step in enumerate(getattr(g.program, "steps", [])):
            if getattr(step, "kernel", None) is not None and not getattr(step, "failed", False):
                continue
            if i in static:  # computed once from parameters and cached (a merged quantized weight), not per call
                continue
            for node in step.nodes:
                if node.op == "torch_op":
                    add(str(node.attrs.get("target")))
                elif REGISTRY[node.op].category != "view":
                    add(node.op)
    return ops


def run_backend(row: dict, make, ids, ref, cuda: bool, tc: bool):
    """Compile (make()), first call, check, time and profile one backend; fills `row` as it goes; returns the
    compiled callable."""
    with torch.no_grad():
        sync(cuda)
        t0 = time.perf_counter()
        fn = make()
        out = fn(ids)
        sync(cuda)
        row["compile_s"] = time.perf_counter() - t0
        err = rel_err(out, ref)
        del out
        err = max(err, rel_err(fn(ids), ref))  # later calls may take another path (direct launch, graph replay)
        row["rel_err"] = err
        row["wall_ms"] = wall_ms(lambda: fn(ids), cuda)
        if cuda:
            row["gpu_ms"], row["device_ops"], row["top_kernels"] = profile(lambda: fn(ids))
            row["span_ms"] = span(lambda: fn(ids))
        if tc:
            row["tc_kernels"] = sum(len(g.kernels) for g in fn.report.graphs)
            row["torch_ops_by_op"] = torch_ops(fn.report)
            row["torch_ops"] = sum(row["torch_ops_by_op"].values())
            row["graphs"] = len(fn.report.graphs)
    return fn


def profile_rounds(runs: list, ids, rounds: int) -> None:
    """GPU time again for every backend of a model, in `rounds` interleaved rounds (forward order, then
    reversed, ...): a backend profiled right after a long run of another one meets a warmer, slower-clocked GPU
    (the same cuBLAS kernels measured 2-4% apart by position alone), so each row's GPU time is the median of
    its rounds (all in `gpu_ms_rounds`), its kernel list from the median round."""
    from tilecraft.testing import interleaved_rounds

    with torch.no_grad():
        per = interleaved_rounds([fn for _, fn in runs], rounds,
                                 lambda fn: profile(lambda: fn(ids)) + (span(lambda: fn(ids)),))
    for (row, _), got in zip(runs, per):
        row["gpu_ms"], row["device_ops"], row["top_kernels"] = sorted(got, key=lambda x: x[0])[len(got) // 2][:3]
        row["gpu_ms_rounds"] = [round(x[0], 4) for x in got]
        row["span_ms"] = statistics.median(x[3] for x in got)
        row["span_ms_rounds"] = [round(x[3], 4) for x in got]


def free(cuda: bool) -> None:
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def parse_opts(text: str, sep: str = ",") -> dict:
    """'a=1,b=True,c=name' -> {'a': 1, 'b': True, 'c': 'name'} (Python literals where they parse)."""
    opts = {}
    for item in filter(None, (s.strip() for s in text.split(sep))):
        key, eq, val = item.partition("=")
        if not eq:
            raise SystemExit(f"option {item!r}: expected key=value")
        try:
            opts[key.strip()] = ast.literal_eval(val.strip())
        except (ValueError, SyntaxError):
            opts[key.strip()] = val.strip()
    return opts


def backends(args, name: str, model) -> list[tuple[str, object, bool, str | None]]:
    """(backend name, factory of the compiled callable, is tilecraft, quant scheme) in run order."""
    out = [("eager", lambda: model, False, None)]
    if not args.dry_run and "inductor" in args.backends.split(","):
        out.append(("inductor", lambda: torch.compile(model), False, None))
        if args.max_autotune:
            out.append(("inductor_max_autotune",
                        lambda: torch.compile(model, mode="max-autotune-no-cudagraphs"), False, None))
    tc_opts = parse_opts(args.tc_opts)
    if "tilecraft" in args.backends.split(","):
        for v in filter(None, args.variants.split(",")):
            opts = {**tc_opts, **({} if v == "default" else parse_opts(v, "+"))}
            label = "tilecraft" if v == "default" else f"tilecraft[{v}]"
            out.append((label, lambda o=opts: tilecraft.compile(model, **o), True, None))
    if name in QUANT_MODELS:
        for q in filter(None, args.quant.split(",")):
            # compile(quantize=...) quantizes a copy sharing the model's other tensors: the model stays as it is
            out.append((f"tilecraft_{q}", lambda q=q: tilecraft.compile(model, quantize=QUANT[q], **tc_opts), True, q))
    return out


def bench_model(name: str, args, p: dict, results: list, infos: dict) -> None:
    cuda = not args.dry_run
    dev = "cuda" if cuda else "cpu"
    causal = MODELS[name][-1]
    log(f"{name}: building")
    model, ids, cfg = build(name, args.dry_run, dev)
    b, t = ids.shape
    with torch.no_grad():
        ref32 = model(ids) if cuda else None  # float32: what bf16 itself costs (on the CPU the model stays fp32)
        ref32 = output_of(ref32).float() if ref32 is not None else None
        if cuda:
            model = model.to(torch.bfloat16)
        ref = output_of(model(ids)).detach().clone()
    nbytes, flops = work(model, cfg, b, t, causal)
    info = {"model": name, "class": type(model).__name__, "batch": b, "tokens": t, "causal": causal,
            "params": sum(p_.numel() for p_ in model.parameters()), "flops": flops, "bytes": nbytes,
            "attn_implementation": getattr(cfg, "_attn_implementation", None),
            "floor_ms": peaks.floor_ms(nbytes, flops, p)}
    infos[name] = info
    log(f"{name}: {info['params'] / 1e6:.0f}M params, batch {b} x {t}, floor {info['floor_ms']:.3f} ms")
    runs = []  # (row, compiled callable) for the interleaved rounds
    for label, make, tc, scheme in backends(args, name, model):
        row = {"model": name, "backend": label}
        log(f"{name}: {label} ...")
        try:
            fn = run_backend(row, make, ids, ref, cuda, tc)
            if cuda and args.rounds > 1:
                runs.append((row, fn))
            if label == "eager" and ref32 is not None:
                row["rel_err_vs_fp32"] = rel_err(ref, ref32)
            fb, ff = work(model, cfg, b, t, causal, scheme) if scheme else (nbytes, flops)
            row["floor_ms"] = peaks.floor_ms(fb, ff, p)
            if row.get("gpu_ms"):
                row["pct_floor"] = 100 * row["floor_ms"] / row["gpu_ms"]
            log(f"{name}: {label}: compile {row['compile_s']:.1f}s, wall {row['wall_ms']:.3f} ms"
                + (f", GPU {row['gpu_ms']:.3f} ms, {row['device_ops']:.0f} device ops" if "gpu_ms" in row else "")
                + (f", {row['tc_kernels']} kernels, {row['torch_ops']} ops through torch" if tc else "")
                + f", rel err {row['rel_err']:.2e}")
        except Exception as e:  # noqa: BLE001 - one failing backend must not hide the others' numbers
            traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            log(f"{name}: {label}: FAILED {row['error'][:200]}")
        results.append(row)
        if not runs:
            free(cuda)
    if runs:
        try:
            profile_rounds(runs, ids, args.rounds)
        except Exception:  # noqa: BLE001 - the rows keep their first profile
            traceback.print_exc()
        for row, _ in runs:
            if row.get("gpu_ms") and row.get("floor_ms"):
                row["pct_floor"] = 100 * row["floor_ms"] / row["gpu_ms"]
        log(f"{name}: GPU ms, median of {args.rounds} interleaved rounds: "
            + ", ".join(f"{row['backend']} {row.get('gpu_ms', 0):.3f} {row.get('gpu_ms_rounds')}" for row, _ in runs))
    del model, ids, ref, ref32, runs
    free(cuda)


def add_ratios(results: list) -> None:
    """Speed vs Inductor default, by GPU time and by wall time, where both exist."""
    ind = {r["model"]: r for r in results if r["backend"] == "inductor" and "error" not in r}
    for r in results:
        i = ind.get(r["model"])
        if i is None or "error" in r:
            continue
        if r.get("gpu_ms") and i.get("gpu_ms"):
            r["x_inductor_gpu"] = i["gpu_ms"] / r["gpu_ms"]
        if r.get("wall_ms") and i.get("wall_ms"):
            r["x_inductor_wall"] = i["wall_ms"] / r["wall_ms"]
        if r.get("span_ms") and i.get("span_ms"):
            r["x_inductor_span"] = i["span_ms"] / r["span_ms"]


def geomean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summary(results: list) -> list[str]:
    """One line per tilecraft backend: geomean over models of Inductor GPU ms / its GPU ms (and by wall)."""
    lines = []
    labels = dict.fromkeys(r["backend"] for r in results if r["backend"].startswith("tilecraft"))
    for label in labels:
        rows = [r for r in results if r["backend"] == label and "x_inductor_gpu" in r]
        walls = [r["x_inductor_wall"] for r in results if r["backend"] == label and "x_inductor_wall" in r]
        if rows:
            lines.append(f"{label}: geomean Inductor GPU ms / {label} GPU ms = "
                         f"{geomean([r['x_inductor_gpu'] for r in rows]):.3f}x over {len(rows)} models "
                         f"({', '.join(r['model'] for r in rows)}); by wall time {geomean(walls):.3f}x"
                         + (f"; by span {geomean(spans):.3f}x" if (spans := [r["x_inductor_span"] for r in rows
                                                                            if "x_inductor_span" in r]) else ""))
    by = {(r["model"], r["backend"]): r for r in results if r.get("gpu_ms")}
    for q in QUANT:  # issue 15: quantized GPU time against tilecraft bf16's, per LLaMA shape
        pairs = [(m, by[(m, f"tilecraft_{q}")]["gpu_ms"] / by[(m, "tilecraft")]["gpu_ms"]) for m in QUANT_MODELS
                 if (m, f"tilecraft_{q}") in by and (m, "tilecraft") in by]
        if pairs:
            lines.append(f"tilecraft_{q} GPU ms / tilecraft bf16 GPU ms: "
                         + ", ".join(f"{m} {x:.2f}x" for m, x in pairs))
        spans = [(m, by[(m, f"tilecraft_{q}")]["span_ms"] / by[(m, "tilecraft")]["span_ms"]) for m, _ in pairs
                 if by[(m, f"tilecraft_{q}")].get("span_ms") and by[(m, "tilecraft")].get("span_ms")]
        if spans:
            lines.append(f"tilecraft_{q} span ms / tilecraft bf16 span ms: "
                         + ", ".join(f"{m} {x:.2f}x" for m, x in spans))
    return lines or ["no tilecraft row with an Inductor row to compare (dry run, or a backend failed)"]


def fmt(v, spec: str, width: int) -> str:
    return ("-" if v is None else format(v, spec)).rjust(width)


def print_table(meta: dict, infos: dict, results: list) -> None:
    add_ratios(results)
    print(f"\n{meta['device']}, torch {meta['torch']}, transformers {meta['transformers']}; {meta['peaks_line']}"
          + ("  (DRY RUN: CPU interpreter, times meaningless)" if meta["dry_run"] else ""))
    for name, i in infos.items():
        print(f"  {name:9} {i['class']} {i['params'] / 1e6:.0f}M params, batch {i['batch']} x {i['tokens']}, "
              f"{i['flops'] / 1e9:.0f} GFLOP, {i['bytes'] / 1e6:.0f} MB, floor {i['floor_ms']:.3f} ms")
    print(f"\n{'model':9} {'backend':28} {'GPU ms':>8} {'span ms':>8} {'wall ms':>8} {'comp s':>7} {'xInd GPU':>8} "
          f"{'xInd wall':>9} {'rel err':>8} {'%floor':>6} {'dev ops':>7} {'kernels':>7} {'torch ops':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['model']:9} {r['backend']:28} ERROR {r['error'][:100]}")
            continue
        print(f"{r['model']:9} {r['backend']:28} {fmt(r.get('gpu_ms'), '.3f', 8)} {fmt(r.get('span_ms'), '.3f', 8)} "
              f"{r['wall_ms']:8.3f} "
              f"{fmt(r['compile_s'] if r['backend'] != 'eager' else None, '.1f', 7)} "
              f"{fmt(r.get('x_inductor_gpu'), '.2f', 8)} {fmt(r.get('x_inductor_wall'), '.2f', 9)} "
              f"{r.get('rel_err_vs_fp32', r['rel_err']):8.1e} {fmt(r.get('pct_floor'), '.0f', 6)} {fmt(r.get('device_ops'), '.0f', 7)} "
              f"{fmt(r.get('tc_kernels'), 'd', 7)} {fmt(r.get('torch_ops'), 'd', 9)}")
    print("(rel err: max |out - eager bf16| / max |eager bf16|; the eager row: bf16 vs a float32 copy of the model;"
          "\n GPU ms: the sum of kernel times; span ms: first kernel start to last kernel end, gaps included)")
    for line in summary(results):
        print(line)


def caches() -> dict[str, int]:
    """Entries in the kernel caches when the run starts (0 everywhere: compile times are cold-cache times)."""
    import getpass
    import tempfile

    dirs = {"tilecraft": os.environ.get("TILECRAFT_CACHE") or os.path.expanduser("~/.cache/tilecraft"),
            "triton": os.environ.get("TRITON_CACHE_DIR") or os.path.expanduser("~/.triton/cache"),
            "inductor": os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            or os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")}
    return {f"{k} {d}": sum(len(files) for _, _, files in os.walk(d)) for k, d in dirs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--backends", default="inductor,tilecraft",
                    help="comma list of inductor, tilecraft, or none (eager always runs; --quant rows come anyway)")
    ap.add_argument("--max-autotune", action="store_true",
                    help="also Inductor mode='max-autotune-no-cudagraphs' (minutes per model)")
    ap.add_argument("--tc-opts", default="", help="tilecraft.compile options for every tilecraft row: k=v,k=v")
    ap.add_argument("--variants", default="default",
                    help="tilecraft variants, comma-separated; each 'default' or k=v+k=v (e.g. cuda_graphs=True)")
    ap.add_argument("--quant", default="", help="comma list of int8, int4: quantized rows for llama_b1/llama_b4")
    ap.add_argument("--rounds", type=int, default=3,
                    help="GPU time: median of this many interleaved profiling rounds over the model's backends "
                         "(1: each backend once, right after its compile)")
    ap.add_argument("--out", default="bench/results/models.json")
    ap.add_argument("--top", type=int, default=8, help="kernels listed per row (name, µs per call, launches)")
    ap.add_argument("--budget-s", type=float, default=0.0, help="start no model after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU (interpreter, fp32)")
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print one table from these results and exit")
    args = ap.parse_args(argv)
    TOP[0] = args.top
    if args.table:
        runs = [json.loads(Path(f).read_text()) for f in args.table]
        infos = {k: v for r in runs for k, v in r["models"].items()}
        print_table(runs[0]["meta"], infos, [row for r in runs for row in r["results"]])
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")
    bad = [b for b in filter(None, args.backends.split(",")) if b not in ("inductor", "tilecraft", "none")]
    if bad:
        ap.error(f"unknown --backends {bad}; known: inductor, tilecraft, none")
    bad = [q for q in filter(None, args.quant.split(",")) if q not in QUANT]
    if bad:
        ap.error(f"unknown --quant {bad}; known: {', '.join(QUANT)}")
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run", file=sys.stderr)
        return 2
    import transformers

    log("measuring the device's copy bandwidth and matmul rate")
    p = peaks.measure(cuda=not args.dry_run)
    log(peaks.describe(p))
    meta = {"device": p["device"] if not args.dry_run else "cpu (interpreter)", "torch": torch.__version__,
            "transformers": transformers.__version__, "dry_run": args.dry_run, "peaks": p,
            "peaks_line": peaks.describe(p), "args": vars(args), "cache_files_at_start": caches()}
    log(f"cache files at start (compile times are cold where 0): {meta['cache_files_at_start']}")
    results, infos = [], {}
    for name in names:
        if args.budget_s and time.perf_counter() - T0 > args.budget_s:
            log(f"{name}: skipped (past --budget-s {args.budget_s:.0f})")
            results.append({"model": name, "backend": "-", "error": "skipped: past --budget-s"})
            continue
        try:
            bench_model(name, args, p, results, infos)
        except Exception as e:  # noqa: BLE001 - building the model failed: record it, go on
            traceback.print_exc()
            results.append({"model": name, "backend": "-", "error": f"{type(e).__name__}: {e}"[:500]})
            free(not args.dry_run)
        add_ratios(results)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after every model: a killed run keeps its rows
        Path(args.out).write_text(json.dumps({"meta": meta, "models": infos, "results": results}, indent=1,
                                             default=str))
    log(f"wrote {args.out}")
    print_table(meta, infos, results)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
