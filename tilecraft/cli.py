"""The command line: `tilecraft demo | explain | tune | fuzz | db | cache` (also `python -m tilecraft`)."""
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
    """Show the IR after each pass that changed it, the fused groups and the Triton source of each kernel, for
    MODULE:FACTORY (a function returning (model, example_inputs)) or the built-in transformer block."""
    import torch

    import tilecraft
    from tilecraft.models import TransformerBlock

    if args.factory:
        from tilecraft.tuner.tune import load_factory

        try:
            made = load_factory(args.factory)()
        except ValueError as e:
            print(f"tilecraft explain: {e}", file=sys.stderr)
            return 2
        if not (isinstance(made, (list, tuple)) and len(made) == 2):
            print(f"tilecraft explain: {args.factory} must return (model, example_inputs)", file=sys.stderr)
            return 2
        model, inputs = made
        inputs = inputs if isinstance(inputs, (list, tuple)) else (inputs,)
    else:
        torch.manual_seed(args.seed)
        model = TransformerBlock(d=args.dim, heads=4).eval()
        inputs = (torch.randn(args.batch, args.tokens, args.dim),)
    with torch.no_grad():
        tilecraft.explain(model, *inputs)
    return 0


def main(argv=None) -> int:
    from tilecraft import __version__

    p = argparse.ArgumentParser(prog="tilecraft", description=__doc__)
    p.add_argument("--version", action="version", version=f"tilecraft {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in [("demo", cmd_demo), ("explain", cmd_explain)]:
        s = sub.add_parser(name, help=" ".join(fn.__doc__.split()))
        if name == "explain":
            s.add_argument("factory", nargs="?", metavar="MODULE:FACTORY",
                           help="a function returning (model, example_inputs); default: a small transformer block")
        s.add_argument("--dim", type=int, default=64)
        s.add_argument("--batch", type=int, default=2)
        s.add_argument("--tokens", type=int, default=16)
        s.add_argument("--seed", type=int, default=0)
        s.set_defaults(fn=fn)
    import importlib

    # each subpackage adds its own subcommands
    for mod in ("tilecraft.tuner.cli", "tilecraft.fuzz.cli", "tilecraft.compiler.cache"):
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
