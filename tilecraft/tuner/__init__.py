"""The autotuner: config spaces, cost model, search, measurer, schedule database, offline tuning runs.

Interfaces (as in TVM MetaSchedule): a template declares its space and feature traits with
`spaces.register_template`; a `search.SearchStrategy` proposes configs and observes their measurements
(exhaustive, random, evolutionary; evolutionary + a `cost_model.CostModel` is the guided search); a
`measure.Measurer` times one config; `search.tune` is the one loop that drives them, and `tune.tune_kernels` runs
it over a list of kernels that the caller (the CLI: tilecraft/cli_tune.py) collected. search and cost_model import
XGBoost, so they are not imported here (codegen imports this package for `select_config`).
"""
from .database import ScheduleDB, ScheduleRecord, default_db_path, shape_key
from .device import PRESETS, DeviceInfo
from .select import select_config
from .spaces import ConfigSpace, register_space, register_template, space_for

__all__ = ["select_config", "space_for", "register_space", "register_template", "ConfigSpace", "DeviceInfo",
           "PRESETS", "ScheduleDB", "ScheduleRecord", "default_db_path", "shape_key"]
