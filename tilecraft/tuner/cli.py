"""`tilecraft tune MODULE:FACTORY ...` and `tilecraft db show|export|import`."""
from __future__ import annotations

import argparse
import time


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_tune(args) -> int:
    """Tune every kernel of a model (or a list of kernels) and write the schedule database."""
    import signal


    from .database import default_db_path
    from .device import DeviceInfo, lookup
    from .tune import collect_kernels, load_factory, parse_budget, summary_table, tune_kernels

    db = args.db or default_db_path()
    try:
        parse_budget(args.budget)  # a bad --budget fails before compiling anything
    except ValueError as e:
        print(f"tilecraft tune: {e}")
        return 2
    device = lookup(args.device) if args.device else DeviceInfo.detect()
    t0 = time.perf_counter()
    kernels = collect_kernels(load_factory(args.factory)())
    if not kernels:
        print(f"{args.factory}: the compiled model has no generated kernels to tune")
        return 1
    factory = None
    if args.simulate:
        from .measure import simulated_measurer_factory as factory
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


def cmd_db(args) -> int:
    """Show, export or import the schedule database."""
    from .database import ScheduleDB, default_db_path

    with ScheduleDB(args.db or default_db_path()) as db:
        if args.action == "show":
            recs = db.all()
            best: dict[tuple, object] = {}
            for r in recs:
                if r.status != "ok":
                    continue
                k = (r.kernel_key, r.shape_key, r.dtype, r.device, r.triton_version)
                if k not in best or r.time_ms < best[k].time_ms:
                    best[k] = r
            print(f"{db.path}: {len(recs)} records ({sum(r.status == 'failed' for r in recs)} failed), "
                  f"{len(best)} tuned kernels")
            for (key, shp, dt, dev, tv), r in sorted(best.items()):
                print(f"  {key} {r.template} [{shp}] {dt} on {dev} / Triton {tv}: {r.time_ms:.4f} ms {r.config}")
        elif args.action == "export":
            if not args.file:
                raise SystemExit("tilecraft db export needs a FILE")
            print(f"exported {db.export_json(args.file)} records to {args.file}")
        else:
            if not args.file:
                raise SystemExit("tilecraft db import needs a FILE")
            print(f"imported {db.import_json(args.file)} records from {args.file} into {db.path}")
    return 0


def register(subparsers) -> None:
    t = subparsers.add_parser("tune", help=cmd_tune.__doc__)
    t.add_argument("factory", help="MODULE:FACTORY returning (model, example_inputs) or a list of kernels")
    t.add_argument("--budget", default="64",
                   help="measurements per kernel, or tiny|small|medium|large (also caps seconds per kernel)")
    t.add_argument("--db", default=None, help="schedule database (default $TILECRAFT_SCHEDULES or ~/.cache/...)")
    t.add_argument("--strategy", choices=["guided", "random", "exhaustive"], default="guided")
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
    d = subparsers.add_parser("db", help=cmd_db.__doc__)
    d.add_argument("action", choices=["show", "export", "import"])
    d.add_argument("file", nargs="?", help="JSON file for export/import")
    d.add_argument("--db", default=None)
    d.set_defaults(fn=cmd_db)
