"""`tilecraft db show|export|import` (`tilecraft tune` lives on the CLI side: tilecraft/cli_tune.py)."""
from __future__ import annotations


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
    d = subparsers.add_parser("db", help=cmd_db.__doc__)
    d.add_argument("action", choices=["show", "export", "import"])
    d.add_argument("file", nargs="?", help="JSON file for export/import")
    d.add_argument("--db", default=None)
    d.set_defaults(fn=cmd_db)
