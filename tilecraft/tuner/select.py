"""The one entry codegen uses: pick a kernel's launch config from the schedule database, else its default."""
from __future__ import annotations

import logging
import os

import triton

from .database import ScheduleDB, default_db_path, shape_key
from .device import DeviceInfo

log = logging.getLogger("tilecraft.tuner")


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def select_config(kernel, schedules: str | None = None, device_info: DeviceInfo | None = None) -> tuple[dict, str]:
    """(config, source): the fastest database record for this kernel's key, shapes, dtype, device and Triton
    version ("database"), else `kernel.default_config()` ("default").

    `schedules=None` uses `default_db_path()` when that file exists. A record made on another device or Triton
    version, or whose knobs differ from the kernel's, is not applied (logged).
    """
    default = kernel.default_config()
    path = schedules
    if path is None:
        path = default_db_path()
        if not os.path.exists(path):
            return default, "default"
    elif not os.path.exists(path):
        raise FileNotFoundError(f"schedule database {path!r} does not exist (tilecraft.compile(schedules=...)); "
                                f"create one with `tilecraft tune`")
    device = device_info or DeviceInfo.detect()
    with ScheduleDB(path) as db:
        rec = db.best(kernel.key, shape_key(kernel.shapes), dtype_name(kernel.dtype), device.name,
                      triton.__version__, device.capability_str)
    if rec is None:
        return default, "default"
    if "BACKEND" in default and "BACKEND" not in rec.config:  # a record from before matmul backends: Triton
        rec.config["BACKEND"] = "triton"
    if set(rec.config) != set(default):
        log.warning("tilecraft: schedule for kernel %s has knobs %s but the kernel takes %s; using the default",
                    kernel.key, sorted(rec.config), sorted(default))
        return default, "default"
    return dict(rec.config), "database"
