"""The autotuner: config spaces, cost model, search, measurer, schedule database, offline tuning runs."""
from .database import ScheduleDB, ScheduleRecord, default_db_path, shape_key
from .device import PRESETS, DeviceInfo
from .select import select_config
from .spaces import ConfigSpace, register_space, space_for

__all__ = ["select_config", "space_for", "register_space", "ConfigSpace", "DeviceInfo", "PRESETS", "ScheduleDB",
           "ScheduleRecord", "default_db_path", "shape_key"]
