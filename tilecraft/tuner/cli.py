"""`tilecraft db show|export|import` (`tilecraft tune` lives on the CLI side: tilecraft/cli_tune.py)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _fail(msg: str) -> int:
    print(f"tilecraft db: {msg}", file=sys.stderr)
    return 1


def _read_db(args, read):
    """(path, read(db)) of the database to read (it must exist: reading never creates one), or (None, None)
    after printing why."""
    from .database import ScheduleDB, default_db_path

    path = args.db or default_db_path()
    if not os.path.isfile(path):
        _fail(f"no schedule database at {path}" + ("" if args.db else " (the default; run `tilecraft tune` first)"))
        return None, None
    with ScheduleDB(path) as db:
        return db.path, read(db)


def cmd_db_show(args) -> int:
    """List the best record of each tuned kernel."""
    path, recs = _read_db(args, lambda db: db.all())
    if path is None:
        return 1
    best: dict[tuple, object] = {}
    for r in recs:
        if r.status != "ok":
            continue
        k = (r.kernel_key, r.shape_key, r.dtype, r.device, r.triton_version, r.simulated)
        if k not in best or r.time_ms < best[k].time_ms:
            best[k] = r
    n_sim = sum(r.simulated for r in recs)
    print(f"{path}: {len(recs)} records ({sum(r.status == 'failed' for r in recs)} failed"
          f"{f', {n_sim} SIMULATED' if n_sim else ''}), {len(best)} tuned kernels")
    for (key, shp, dt, dev, tv, sim), r in sorted(best.items()):
        print(f"  {key} {r.template} [{shp}] {dt} on {dev} / Triton {tv}: {r.time_ms:.4f} ms"
              f"{' (SIMULATED)' if sim else ''} {r.config}")
    return 0


def cmd_db_export(args) -> int:
    """Write every record as JSON to FILE (`-`: standard output)."""
    path, text = _read_db(args, lambda db: db.export_text())
    if path is None:
        return 1
    n = len(json.loads(text)["records"])
    if args.file == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(args.file).write_text(text)
        print(f"exported {n} records from {path} to {args.file}")
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
