"""Offline tuning runs: compile a model, tune each of its kernels, write the schedule DB, report and plot."""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import triton

from .database import ScheduleDB, ScheduleRecord, shape_key
from .device import DeviceInfo
from .measure import Measurement, SimulatedMeasurer, SyntheticSurface
from .search import TuneResult, search
from .select import dtype_name
from .spaces import space_for_kernel


@dataclass
class KernelSummary:
    name: str
    key: str
    description: str
    default_ms: float | None
    tuned_ms: float | None
    measurements: int
    failed: int
    best_config: dict | None
    result: TuneResult
    plot: str | None = None

    @property
    def speedup(self) -> float | None:
        if self.default_ms and self.tuned_ms:
            return self.default_ms / self.tuned_ms
        return None


def load_factory(spec: str) -> Callable:
    """`package.module:function` -> the function."""
    if ":" not in spec:
        raise ValueError(f"expected MODULE:FACTORY (e.g. tilecraft.tuner.examples:mlp), got {spec!r}")
    mod, name = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(mod), name)
    except AttributeError:
        raise AttributeError(f"module {mod!r} has no factory {name!r}") from None


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


def default_measurer_factory(device: DeviceInfo) -> Callable:
    """GPU: a GPUMeasurer. No GPU: simulated timings (a synthetic surface per kernel) with correctness checked by
    really running every candidate through the Triton interpreter."""
    import torch

    if torch.cuda.is_available():
        from .measure import GPUMeasurer

        m = GPUMeasurer()
        return lambda kernel, space: m
    return lambda kernel, space: SimulatedMeasurer(SyntheticSurface(space, seed=int(kernel.key[:8], 16)),
                                                   run_kernels=True)


def plot_curve(result: TuneResult, path: str | os.PathLike, title: str) -> str:
    """A PNG of best time so far vs measurements (and the default config's time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [c if math.isfinite(c) else float("nan") for c in result.curve()]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(curve) + 1), curve, drawstyle="steps-post", label=f"best ({result.strategy})")
    if result.default and result.default.ok:
        ax.axhline(result.default.time_ms, color="gray", linestyle="--", label="default config")
    ax.set_xlabel("measurements")
    ax.set_ylabel("time (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def tune_kernels(kernels: list, db_path: str, budget: int = 64, strategy: str = "guided",
                 measurer_factory: Callable | None = None, device_info: DeviceInfo | None = None,
                 plot_dir: str | None = None, seed: int = 0, time_budget_s: float | None = None,
                 patience: int | None = None, progress: bool = True) -> list[KernelSummary]:
    """Tune each distinct kernel (by key, shapes, dtype); every measurement is committed to the DB at once."""
    from tqdm import tqdm

    device = device_info or DeviceInfo.detect()
    measurer_factory = measurer_factory or default_measurer_factory(device)
    seen, summaries = set(), []
    db = ScheduleDB(db_path)
    if plot_dir:
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
    try:
        for kernel in kernels:
            ident = (kernel.key, shape_key(kernel.shapes), dtype_name(kernel.dtype))
            if ident in seen:
                continue
            seen.add(ident)
            space = space_for_kernel(kernel, device)
            name = getattr(kernel, "name", kernel.key)
            bar = tqdm(total=budget, desc=f"tune {name}", unit="cfg", disable=not progress, leave=False)

            def record(m: Measurement, kernel=kernel, bar=bar) -> None:
                db.add(ScheduleRecord(kernel.key, kernel.template, shape_key(kernel.shapes), dtype_name(kernel.dtype),
                                      device.name, device.capability_str, triton.__version__, m.config, m.time_ms,
                                      m.status, m.timestamp, m.error))
                bar.update(1)

            res = search(kernel, space, measurer_factory(kernel, space), strategy, budget=budget,
                         time_budget_s=time_budget_s, seed=seed, patience=patience, device_info=device,
                         on_measure=record)
            bar.close()
            best = res.best
            desc = kernel.describe() if hasattr(kernel, "describe") else f"{kernel.template} {kernel.shapes}"
            s = KernelSummary(name, kernel.key, desc, res.default.time_ms if res.default else None,
                              best.time_ms if best else None, res.measurements,
                              sum(not m.ok for m in res.history), best.config if best else None, res)
            if plot_dir:
                s.plot = plot_curve(res, Path(plot_dir) / f"{name}_{kernel.key}.png", f"{name}: {desc}"[:90])
            summaries.append(s)
    finally:
        db.close()
    return summaries


def summary_table(rows: list[KernelSummary]) -> str:
    """Per kernel: default time, tuned time, speedup, measurements used (and failed)."""
    head = f"{'kernel':<34} {'default ms':>11} {'tuned ms':>10} {'speedup':>8} {'measured':>9} {'failed':>7}"
    lines = [head, "-" * len(head)]

    def fmt(x, spec):
        return format(x, spec) if x is not None else "-"

    for r in rows:
        lines.append(f"{r.name[:34]:<34} {fmt(r.default_ms, '11.4f')} {fmt(r.tuned_ms, '10.4f')} "
                     f"{fmt(r.speedup, '7.2f') + 'x' if r.speedup else '-':>8} {r.measurements:>9} {r.failed:>7}")
    return "\n".join(lines)


def tune_model(spec: str, db_path: str, budget: int = 64, strategy: str = "guided", plot_dir: str | None = None,
               **kw) -> list[KernelSummary]:
    """`tilecraft tune MODULE:FACTORY`: build, compile, collect kernels, tune them all."""
    kernels = collect_kernels(load_factory(spec)())
    if not kernels:
        raise RuntimeError(f"{spec}: the compiled model has no generated kernels to tune (codegen produced none)")
    return tune_kernels(kernels, db_path, budget, strategy, plot_dir=plot_dir, **kw)
