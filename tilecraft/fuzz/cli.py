"""`tilecraft fuzz`: run a campaign, or replay one case from its seed.

Exits 0 only when every checked model matched eager in generated kernels; 1 when anything was mismatched,
crashed or fell back to torch (so CI can gate on it).
"""
from __future__ import annotations

import argparse
import os
import re


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h', '1h30m' -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 1h")
    return sum(float(n) * {"s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16", "bf16": "bfloat16",
          "bfloat16": "bfloat16"}


def parse_dtypes(text: str) -> tuple:
    """'fp32,bf16' -> (torch.float32, torch.bfloat16)."""
    import torch

    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown dtype(s) {bad or text!r}; use fp32, bf16, fp16")
    return tuple(getattr(torch, DTYPES[n]) for n in names)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cmd_fuzz(args) -> int:
    """Exit status: 0 when every checked model matched in generated kernels, 1 when anything else was found
    (a mismatch, a crash, a kernel that fell back to torch), 2 when the arguments are wrong."""
    import torch

    args.device = args.device or default_device()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"tilecraft fuzz: --device {args.device} but CUDA is not available; use --device cpu")
        return 2
    if args.device == "cpu":
        from ..codegen.kernel import interpreting

        if not interpreting():
            print("tilecraft fuzz: --device cpu runs Triton kernels through its interpreter; "
                  "set TRITON_INTERPRET=1 before starting")
            return 2
    if args.replay is not None:
        return replay(args)
    from .campaign import CampaignConfig, run_campaign

    cfg = CampaignConfig(seed=args.seed, backend=args.backend, out=args.out, time_s=args.time,
                         max_models=args.max_models, reduce=not args.no_reduce, progress=not args.no_progress,
                         device=args.device, dtypes=args.dtypes, jobs=args.jobs,
                         reduce_seconds=args.reduce_seconds)
    summary = run_campaign(cfg)
    print(summary.text())
    print(f"wall time {summary.wall_seconds:.0f}s with {cfg.jobs} job(s) on {cfg.device}")
    print(f"state and repros in {os.path.abspath(args.out)} (rerun the same command to continue)")
    bad = summary.found_problems
    if args.big:
        from .big import run_big

        big = run_big(args.out, args.device, args.seed, args.big)
        bad += sum(r["outcome"] != "matched" for r in big)
    return 1 if bad else 0


def replay(args) -> int:
    """Regenerate and re-check the model of one seed; print its program and verdict; reduce it if it fails."""
    from .case import run_seed
    from .oracle import tilecraft_warnings
    from .reduce import Reducer, repro_test

    with tilecraft_warnings():  # fallback lines are part of the verdict, not printed (logger restored after)
        model, res = run_seed(args.replay, args.backend, args.device, args.dtypes)
    print(res.source)
    if res.verdict is None:
        print(f"# seed {args.replay}: not checked: {res.skipped}")
        return 0
    v = res.verdict
    print(f"# seed {args.replay}: {v.status} {v.message}")
    print(f"# rules: {dict(v.rules)}")
    if v.failed and not args.no_reduce:
        with tilecraft_warnings():
            red = Reducer(args.backend, seed=args.replay, device=args.device).reduce(res)
        text = repro_test(red, args.backend, name=f"fuzz_seed_{args.replay}", device=args.device)
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"test_fuzz_seed_{args.replay}.py")
        with open(path, "w") as f:
            f.write(text)
        print(f"# reduced {len(model.graph.nodes)} -> {len(red.reduced.graph.nodes)} ops in {red.checks} checks; "
              f"repro: {path}")
    return 1 if v.failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("fuzz", help="differential fuzzing: random models vs eager, reduced repros")
    p.add_argument("--time", type=parse_duration, default=600.0, help="time budget, e.g. 90s, 10m (default 10m)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (model seeds derive from it)")
    p.add_argument("--backend", default="tilecraft", help="tilecraft, tilecraft-interpreted (codegen off) or any torch.compile backend name")
    p.add_argument("--out", default="fuzz-out", help="campaign directory (state, repros); reused to resume")
    p.add_argument("--max-models", type=int, default=None, help="stop after this many models")
    p.add_argument("--replay", type=int, default=None, metavar="SEED", help="re-check one model seed and exit")
    p.add_argument("--no-reduce", action="store_true", help="do not reduce failures")
    p.add_argument("--reduce-seconds", type=float, default=60.0, help="time limit of one reduction")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available); inputs are built "
                                                   "there and generated kernels run there")
    p.add_argument("--dtypes", type=parse_dtypes, default=None,
                   help="float dtypes of the models, e.g. fp32,bf16,fp16 (default: all three, mixed)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes checking models (compiles in parallel)")
    p.add_argument("--big", type=int, default=0, metavar="N",
                   help="also check N models with more than 2^31 elements (64-bit index arithmetic; GPU only)")
    p.set_defaults(fn=cmd_fuzz)
