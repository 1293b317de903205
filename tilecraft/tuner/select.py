"""The one entry codegen uses: pick a kernel's launch config from the schedule database, else its default."""
from __future__ import annotations

import logging
import os

import triton

from .database import ScheduleDB, default_db_path, shape_bucket, shape_key
from .device import DeviceInfo

log = logging.getLogger("tilecraft.tuner")


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def schedule_sources(schedules) -> list[str]:
    """The databases to read, in order: `schedules` (a path or a list of paths; a missing one is an error), or
    `default_db_path()` when that file exists."""
    if schedules is None:
        path = default_db_path()
        return [path] if os.path.exists(path) else []
    paths = [schedules] if isinstance(schedules, (str, os.PathLike)) else list(schedules)
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"schedule database {str(p)!r} does not exist (tilecraft.compile(schedules=...)); "
                                    f"create one with `tilecraft tune`")
    return [str(p) for p in paths]


def select_config(kernel, schedules=None, device_info: DeviceInfo | None = None) -> tuple[dict, str]:
    """(config, source): the fastest database record for this kernel's key, shapes, dtype, device and Triton
    version ("database"), else a record of the same template in the same shape bucket ("database (bucket)",
    for shapes never tuned, as dynamic shapes make), else `kernel.default_config()` ("default").

    `schedules` is a path, a list of paths (merged: the first database with a match wins) or None
    (`default_db_path()` when that file exists). A record made on another device or Triton version, or whose
    knobs differ from the kernel's, is not applied (warned once); simulated times are only used on the CPU
    interpreter, never for a real device.
    """
    default = kernel.default_config()
    paths = schedule_sources(schedules)
    if not paths:
        return default, "default"
    device = device_info or DeviceInfo.detect()
    simulated_ok = device.name == "cpu-interpreter"
    ident = (shape_key(kernel.shapes), dtype_name(kernel.dtype), device.name, triton.__version__)
    bucket = None  # the first database's bucket match, used only when no database has an exact one
    for path in paths:  # each database opened once
        with ScheduleDB(path) as db:
            rec = _upgrade(db.best(kernel.key, *ident, device.capability_str, simulated_ok=simulated_ok), default)
            if rec is not None and set(rec.config) != set(default):
                log.warning("tilecraft: schedule for kernel %s in %s has knobs %s but the kernel takes %s; "
                            "using the default", kernel.key, path, sorted(rec.config), sorted(default))
                rec = None
            if rec is not None:
                return dict(rec.config), "database"
            if bucket is None:
                rec = db.bucket_best(kernel.template, kernel.shapes, ident[1], device.name, triton.__version__,
                                     device.capability_str, set(default), simulated_ok=simulated_ok)
                if rec is not None and _runs(kernel, rec.config):
                    bucket = dict(rec.config)
    if bucket is not None:
        return bucket, f"database (bucket {shape_bucket(kernel.shapes)})"
    return default, "default"


def _upgrade(rec, default: dict):
    """A record from before matmul backends ran the Triton template."""
    if rec is not None and "BACKEND" in default and "BACKEND" not in rec.config:
        rec.config["BACKEND"] = "triton"
    return rec


def _runs(kernel, config: dict) -> bool:
    """Does the kernel accept this config (its own `check_config`, where it has one)?"""
    try:
        getattr(kernel, "check_config", lambda c: None)(config)
        return True
    except Exception:  # noqa: BLE001 - any rejection means: not this config
        return False
