"""The command line: `tilecraft demo | explain | tune | fuzz | bench | db`."""
from __future__ import annotations

import argparse
import sys
import time


def cmd_demo(args) -> int:
    """Compile a small transformer block, check it against eager, print what was compiled."""
    import torch

    import tilecraft
    from tilecraft.models import TransformerBlock
    from tilecraft.testing import assert_close

    torch.manual_seed(args.seed)
    model = TransformerBlock(d=args.dim, heads=4).eval()
    x = torch.randn(args.batch, args.tokens, args.dim)
    print(f"model: TransformerBlock(d={args.dim}, heads=4), input {tuple(x.shape)} float32")
    compiled = tilecraft.compile(model)
    with torch.no_grad():
        t0 = time.perf_counter()
        got = compiled(x)
        first = time.perf_counter() - t0
        expected = model(x)
        x2 = torch.randn_like(x)
        got2, expected2 = compiled(x2), model(x2)
    assert_close(got, expected)
    assert_close(got2, expected2)
    err = max((got - expected).abs().max().item(), (got2 - expected2).abs().max().item())
    print(compiled.report.summary())
    print(f"first call (capture + compile + run): {first:.2f}s")
    print(f"matches eager on 2 fresh inputs: max abs error {err:.2e} (float32 tolerance 1e-5)")
    return 0


def cmd_explain(args) -> int:
    import torch

    import tilecraft
    from tilecraft.models import TransformerBlock

    model = TransformerBlock(d=args.dim, heads=4).eval()
    with torch.no_grad():
        tilecraft.explain(model, torch.randn(args.batch, args.tokens, args.dim))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="tilecraft", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in [("demo", cmd_demo), ("explain", cmd_explain)]:
        s = sub.add_parser(name, help=fn.__doc__)
        s.add_argument("--dim", type=int, default=64)
        s.add_argument("--batch", type=int, default=2)
        s.add_argument("--tokens", type=int, default=16)
        s.add_argument("--seed", type=int, default=0)
        s.set_defaults(fn=fn)
    import importlib

    for mod in ("tilecraft.cli_tune", "tilecraft.tuner.cli", "tilecraft.fuzz.cli"):  # each subpackage adds its own subcommands
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        m.register(sub)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
