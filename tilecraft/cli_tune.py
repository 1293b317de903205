"""`tilecraft tune MODULE:FACTORY`: the CLI side of tuning. It builds the model, compiles it with tilecraft,
collects the generated kernels and hands them to the tuner (`tilecraft.tuner.tune.tune_kernels`), which itself
never imports the compiler."""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .tuner.search import STRATEGIES


def load_factory(spec: str) -> Callable:
    """`package.module:function` -> the function. MODULE may be a module of the current directory (`mod.py`), as
    with `python -m`, or a path to a .py file."""
    import sys

    if ":" not in spec:
        raise ValueError(f"expected MODULE:FACTORY (e.g. tilecraft.tuner.reference_kernels:tiny_gemms), got {spec!r}")
    mod, name = spec.rsplit(":", 1)
    if mod.endswith(".py"):
        path = Path(mod).resolve()
        if not path.exists():
            raise ValueError(f"{spec}: no file {mod}")
        sys.path.insert(0, str(path.parent))
        mod = path.stem
    elif os.getcwd() not in sys.path and "" not in sys.path:  # console scripts do not search the cwd
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name != mod.split(".")[0] and e.name != mod:
            raise
        raise ValueError(f"{spec}: no module {mod!r} in the current directory or on the Python path") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"{spec}: module {mod!r} has no factory {name!r}") from None


def is_kernel(obj) -> bool:
    return all(hasattr(obj, a) for a in ("template", "shapes", "dtype", "key", "default_config", "launch",
                                         "make_args"))


def collect_kernels(made, schedules: str | None = None) -> list:
    """Kernels from a factory's result: a list of kernels as is, or (model, example_inputs) compiled with
    tilecraft and run once, then every kernel of `compiled.report.graphs[*].kernels`."""
    if isinstance(made, (list, tuple)) and made and all(is_kernel(k) for k in made):
        return list(made)
    if not (isinstance(made, (list, tuple)) and len(made) == 2):
        raise TypeError("a tuning factory must return (model, example_inputs) or a list of kernels")
    import torch

    import tilecraft

    model, inputs = made
    inputs = inputs if isinstance(inputs, (list, tuple)) else (inputs,)
    opts = {"schedules": schedules} if schedules else {}
    compiled = tilecraft.compile(model, **opts)
    with torch.no_grad():
        compiled(*inputs)
    return [k for g in compiled.report.graphs for k in g.kernels]


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_tune(args) -> int:
    """Tune every kernel of a model (or a list of kernels) and write the schedule database."""
    import signal

    from .tuner.database import default_db_path
    from .tuner.device import DeviceInfo, lookup
    from .tuner.tune import parse_budget, summary_table, tune_kernels

    db = args.db or default_db_path()
    try:
        parse_budget(args.budget)  # a bad --budget fails before compiling anything
    except ValueError as e:
        print(f"tilecraft tune: {e}")
        return 2
    device = lookup(args.device) if args.device else DeviceInfo.detect()
    t0 = time.perf_counter()
    try:
        factory_fn = load_factory(args.factory)
    except ValueError as e:
        print(f"tilecraft tune: {e}", file=sys.stderr)
        return 2
    kernels = collect_kernels(factory_fn())
    if not kernels:
        print(f"{args.factory}: the compiled model has no generated kernels to tune")
        return 1
    factory = None
    if args.simulate:
        from .tuner.measure import simulated_measurer_factory as factory
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # `kill` keeps what was measured, too
    try:
        rows = tune_kernels(kernels, db, args.budget, args.strategy, measurer_factory=factory, device_info=device,
                            plot_dir=args.plot, seed=args.seed, time_budget_s=args.seconds,
                            patience=args.patience, progress=not args.no_progress,
                            total_seconds=args.total_seconds, prior_db=args.prior_db)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary_table(rows))
    distinct = len({(k.key, str(k.shapes), str(k.dtype)) for k in kernels})
    if rows.interrupted:
        print(f"INTERRUPTED after {len(rows)} of {distinct} kernels ({time.perf_counter() - t0:.1f}s); "
              f"every measurement so far is in {db}")
    else:
        print(f"{len(rows)} kernels tuned in {time.perf_counter() - t0:.1f}s on {device.name}; schedules in {db}")
    if args.plot and rows:
        print(f"tuning curves in {args.plot}/")
    return 130 if rows.interrupted else 0


def register(subparsers) -> None:
    t = subparsers.add_parser("tune", help=cmd_tune.__doc__)
    t.add_argument("factory", help="MODULE:FACTORY returning (model, example_inputs) or a list of kernels")
    t.add_argument("--budget", default="64",
                   help="measurements per kernel, or tiny|small|medium|large (also caps seconds per kernel)")
    t.add_argument("--db", default=None, help="schedule database (default $TILECRAFT_SCHEDULES or ~/.cache/...)")
    t.add_argument("--strategy", choices=list(STRATEGIES), default="guided")
    t.add_argument("--plot", default=None, metavar="DIR", help="write a PNG tuning curve per kernel here")
    t.add_argument("--seconds", type=float, default=None, help="time budget per kernel")
    t.add_argument("--total-seconds", type=float, default=None,
                   help="time budget for the whole run, shared among the kernels (matmuls get 3 shares)")
    t.add_argument("--patience", type=int, default=None, help="stop after this many measurements without gain")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default=None, help="device preset name (default: detect)")
    t.add_argument("--simulate", action="store_true",
                   help="simulated timings (correctness still checked by running kernels); the default without GPU")
    t.add_argument("--prior-db", default=None, metavar="DB",
                   help="start from this database's records of the same kernels (e.g. made on another GPU)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(fn=cmd_tune)
