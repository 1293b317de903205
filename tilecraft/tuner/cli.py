"""`tilecraft tune MODULE:FACTORY ...` and `tilecraft db show|export|import`."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


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


def _fail(msg: str) -> int:
    print(f"tilecraft db: {msg}", file=sys.stderr)
    return 1


def _existing_db(args):
    """The database to read (it must exist: reading never creates one), or None after printing why."""
    from .database import ScheduleDB, default_db_path

    path = args.db or default_db_path()
    if not os.path.isfile(path):
        _fail(f"no schedule database at {path}" + ("" if args.db else " (the default; run `tilecraft tune` first)"))
        return None
    return ScheduleDB(path)


def cmd_db_show(args) -> int:
    """List the best record of each tuned kernel."""
    db = _existing_db(args)
    if db is None:
        return 1
    with db:
        recs = db.all()
    best: dict[tuple, object] = {}
    for r in recs:
        if r.status != "ok":
            continue
        k = (r.kernel_key, r.shape_key, r.dtype, r.device, r.triton_version, r.simulated)
        if k not in best or r.time_ms < best[k].time_ms:
            best[k] = r
    n_sim = sum(r.simulated for r in recs)
    print(f"{db.path}: {len(recs)} records ({sum(r.status == 'failed' for r in recs)} failed"
          f"{f', {n_sim} SIMULATED' if n_sim else ''}), {len(best)} tuned kernels")
    for (key, shp, dt, dev, tv, sim), r in sorted(best.items()):
        print(f"  {key} {r.template} [{shp}] {dt} on {dev} / Triton {tv}: {r.time_ms:.4f} ms"
              f"{' (SIMULATED)' if sim else ''} {r.config}")
    return 0


def cmd_db_export(args) -> int:
    """Write every record as JSON to FILE (`-`: standard output)."""
    db = _existing_db(args)
    if db is None:
        return 1
    with db:
        text = db.export_text()
    n = len(json.loads(text)["records"])
    if args.file == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(args.file).write_text(text)
        print(f"exported {n} records from {db.path} to {args.file}")
    return 0


def cmd_db_import(args) -> int:
    """Add the records of an exported JSON FILE (`-`: standard input) to the database (created if missing)."""
    from .database import ScheduleDB, default_db_path

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror or e}")
    with ScheduleDB(args.db or default_db_path()) as db:
        try:
            n = db.import_text(text, "standard input" if args.file == "-" else args.file)
        except (ValueError, KeyError, TypeError) as e:
            return _fail(str(e))
        print(f"imported {n} records from {args.file} into {db.path}", file=sys.stderr if args.file == "-" else
              sys.stdout)
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
    d = subparsers.add_parser("db", help="show, export or import the schedule database")
    actions = d.add_subparsers(dest="action", required=True, metavar="{show,export,import}")
    for name, fn in [("show", cmd_db_show), ("export", cmd_db_export), ("import", cmd_db_import)]:
        a = actions.add_parser(name, help=fn.__doc__)
        if name != "show":
            a.add_argument("file", metavar="FILE", help="JSON file; - for standard " +
                           ("output" if name == "export" else "input"))
        a.add_argument("--db", default=None, help="schedule database (default $TILECRAFT_SCHEDULES or "
                                                  "~/.cache/tilecraft/schedules.sqlite)")
        a.set_defaults(fn=fn)
