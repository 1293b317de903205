"""`tilecraft cache info|clear`: what tilecraft keeps on disk, how big it is, and removing it.

| cache | where | cleared by `cache clear` |
| --- | --- | --- |
| generated kernel sources | `$TILECRAFT_CACHE/kernels/` (default `~/.cache/tilecraft/kernels/`) | yes |
| fuzz program sources | `<tmp>/tilecraft_fuzz_src/` | yes |
| schedule database | `$TILECRAFT_SCHEDULES` (default `~/.cache/tilecraft/schedules.sqlite`) | only with `--schedules` |

Triton's own compiled binaries live in `$TRITON_CACHE_DIR` (default `~/.triton/cache`); tilecraft does not touch them.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def caches() -> list[tuple[str, Path]]:
    """(name, path) of each cache, whether or not it exists yet."""
    from ..codegen.kernel import cache_root
    from ..tuner.database import default_db_path

    return [("kernels", cache_root() / "kernels"),
            ("fuzz", Path(tempfile.gettempdir()) / "tilecraft_fuzz_src"),
            ("schedules", Path(default_db_path()))]


def usage(path: Path) -> tuple[int, int]:
    """(files, bytes) under a path (a file counts as one, with its SQLite -wal/-shm companions)."""
    if path.is_file():
        parts = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
        return len(parts), sum(p.stat().st_size for p in parts)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def cmd_cache(args) -> int:
    """Sizes, file counts and paths of tilecraft's caches, or remove them."""
    if args.action == "info":
        for name, path in caches():
            files, size = usage(path)
            state = f"{files} files, {_size(size)}" if path.exists() else "absent"
            print(f"{name:<10} {state:<24} {path}")
        return 0
    removed = 0
    for name, path in caches():
        if name == "schedules" and not args.schedules:
            if path.exists():
                print(f"kept {name}: {path} (tuning results; add --schedules to remove)")
            continue
        files, size = usage(path)
        if not path.exists():
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    if p.exists():
                        p.unlink()
        except OSError as e:
            print(f"tilecraft cache: cannot remove {path}: {e}", file=sys.stderr)
            return 1
        removed += files
        print(f"removed {name}: {files} files, {_size(size)} ({path})")
    if not removed:
        print("nothing to remove")
    return 0


def register(subparsers) -> None:
    c = subparsers.add_parser("cache", help=cmd_cache.__doc__)
    c.add_argument("action", choices=["info", "clear"])
    c.add_argument("--schedules", action="store_true", help="clear: also remove the schedule database")
    c.set_defaults(fn=cmd_cache)
