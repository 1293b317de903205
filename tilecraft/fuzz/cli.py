"""`tilecraft fuzz`: run a campaign, or replay one case from its seed."""
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


def cmd_fuzz(args) -> int:
    if args.replay is not None:
        return replay(args)
    from .campaign import CampaignConfig, run_campaign

    cfg = CampaignConfig(seed=args.seed, backend=args.backend, out=args.out, time_s=args.time,
                         max_models=args.max_models, reduce=not args.no_reduce, progress=not args.no_progress)
    summary = run_campaign(cfg)
    print(summary.text())
    print(f"state and repros in {os.path.abspath(args.out)} (rerun the same command to continue)")
    return 0


def replay(args) -> int:
    """Regenerate and re-check the model of one seed; print its program and verdict; reduce it if it fails."""
    import logging

    from .case import run_seed
    from .reduce import Reducer, repro_test

    logging.getLogger("tilecraft").setLevel(logging.ERROR)
    model, res = run_seed(args.replay, args.backend)
    print(res.source)
    if res.verdict is None:
        print(f"# seed {args.replay}: not checked: {res.skipped}")
        return 0
    v = res.verdict
    print(f"# seed {args.replay}: {v.status} {v.message}")
    print(f"# rules: {dict(v.rules)}")
    if v.failed and not args.no_reduce:
        red = Reducer(args.backend, seed=args.replay).reduce(res)
        text = repro_test(red, args.backend, name=f"fuzz_seed_{args.replay}")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_fuzz)
