"""Offline tuning runs: tune each of a list of kernels, write the schedule DB, report and plot.

The tuner never compiles a model itself: the CLI side (tilecraft/cli_tune.py) compiles it and collects its
kernels; anything with the kernel protocol (template, shapes, dtype, key, default_config, launch, make_args) can
be tuned here.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import triton

from .cost_model import load_default_model
from .database import ScheduleDB, ScheduleRecord, shape_key
from .device import DeviceInfo
from .measure import Measurement, SimulatedMeasurer, simulated_measurer_factory
from .search import TuneResult, search
from .select import dtype_name
from .spaces import space_for_kernel, template_info


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
    template: str = ""
    shapes: str = ""
    dtype: str = ""
    simulated: bool = False  # times from a simulated measurer (no GPU), not measured

    @property
    def speedup(self) -> float | None:
        if self.default_ms and self.tuned_ms:
            return self.default_ms / self.tuned_ms
        return None


def default_measurer_factory(device: DeviceInfo) -> Callable:
    """GPU: a GPUMeasurer. No GPU: simulated timings (a synthetic surface per kernel) with correctness checked by
    really running every candidate through the Triton interpreter."""
    import torch

    if torch.cuda.is_available():
        from .measure import GPUMeasurer

        m = GPUMeasurer()
        return lambda kernel, space: m
    return simulated_measurer_factory


def plot_curve(result: TuneResult, path: str | os.PathLike, title: str, simulated: bool = False) -> str:
    """A PNG of best time so far vs measurements (and the default config's time); simulated times say so in
    the title. matplotlib is optional (`pip install tilecraft[plot]`); the figure is drawn on the Agg canvas,
    without changing the process's matplotlib backend."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("tuning plots need matplotlib: pip install 'tilecraft[plot]'") from None

    curve = [c if math.isfinite(c) else float("nan") for c in result.curve()]
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(range(1, len(curve) + 1), curve, drawstyle="steps-post", label=f"best ({result.strategy})")
    if result.default and result.default.ok:
        ax.axhline(result.default.time_ms, color="gray", linestyle="--", label="default config")
    ax.set_xlabel("measurements")
    ax.set_ylabel("SIMULATED time (ms)" if simulated else "time (ms)")
    ax.set_title(("SIMULATED (no GPU): " if simulated else "") + title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return str(path)


BUDGETS: dict[str, tuple[int, float | None]] = {
    # name: (measurements per kernel, seconds per kernel)
    "tiny": (4, 10.0),
    "small": (8, 20.0),
    "medium": (32, 60.0),
    "large": (128, 300.0),
}


def parse_budget(budget: int | str) -> tuple[int, float | None]:
    """`--budget`: a number of measurements per kernel, or a preset name (see BUDGETS) that also caps seconds."""
    if isinstance(budget, int):
        return budget, None
    text = str(budget).strip().lower()
    if text.isdigit():
        return int(text), None
    if text in BUDGETS:
        return BUDGETS[text]
    raise ValueError(f"--budget must be a number of measurements per kernel or one of {sorted(BUDGETS)}, "
                     f"got {budget!r}")


class TuneSummaries(list):
    """The per-kernel summaries of one tuning run; `interrupted` says it was cut short (Ctrl-C / SIGTERM)."""

    interrupted: bool = False
    seconds: float = 0.0


def _ident(kernel) -> tuple:
    return kernel.key, shape_key(kernel.shapes), dtype_name(kernel.dtype)


def tune_kernels(kernels: list, db_path: str, budget: int | str = 64, strategy: str = "guided",
                 measurer_factory: Callable | None = None, device_info: DeviceInfo | None = None,
                 plot_dir: str | None = None, seed: int = 0, time_budget_s: float | None = None,
                 patience: int | None = None, progress: bool = True,
                 total_seconds: float | None = None, prior_db: str | None = None) -> TuneSummaries:
    """Tune each distinct kernel (by key, shapes, dtype); every measurement is committed to the DB at once.

    `budget` is measurements per kernel or a preset name; `time_budget_s` caps seconds per kernel and
    `total_seconds` the whole run (the time left is shared among the kernels left, matmuls getting 3 shares).
    On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the CLI) the run stops and returns what it has:
    the interrupted kernel's summary included, `interrupted` set; its measurements are already in the DB.
    `prior_db`: a schedule database (e.g. made on another GPU or Triton version) whose records of the same
    kernels start the guided search's cost model. Records say whether their times were simulated."""
    import time

    from tqdm import tqdm

    n_budget, preset_s = parse_budget(budget)
    per_kernel_s = time_budget_s if time_budget_s is not None else preset_s
    device = device_info or DeviceInfo.detect()
    measurer_factory = measurer_factory or default_measurer_factory(device)
    todo, seen = [], set()
    for kernel in kernels:
        if _ident(kernel) not in seen:
            seen.add(_ident(kernel))
            todo.append(kernel)
    summaries = TuneSummaries()
    t_start = time.perf_counter()
    db = ScheduleDB(db_path)
    if plot_dir:
        Path(plot_dir).mkdir(parents=True, exist_ok=True)
    outer = tqdm(total=len(todo), desc="kernels", unit="kernel", disable=not progress or len(todo) < 2)
    try:
        for i, kernel in enumerate(todo):
            space = space_for_kernel(kernel, device)
            name = getattr(kernel, "name", kernel.key)
            limit_s = per_kernel_s
            if total_seconds is not None:
                left = total_seconds - (time.perf_counter() - t_start)
                shares = [3.0 if k.template == "matmul" else 1.0 for k in todo[i:]]
                fair = max(0.0, left) * shares[0] / sum(shares)
                limit_s = fair if limit_s is None else min(limit_s, fair)
            bar = tqdm(total=n_budget, desc=f"tune {name}"[:40], unit="cfg", disable=not progress, leave=False)
            measurer = measurer_factory(kernel, space)
            simulated = isinstance(measurer, SimulatedMeasurer)

            def record(m: Measurement, kernel=kernel, bar=bar, simulated=simulated) -> None:
                db.add(ScheduleRecord(kernel.key, kernel.template, shape_key(kernel.shapes), dtype_name(kernel.dtype),
                                      device.name, device.capability_str, triton.__version__, m.config, m.time_ms,
                                      m.status, m.timestamp, m.error, simulated))
                bar.update(1)
                if m.ok:
                    bar.set_postfix_str(f"{m.time_ms:.4g} ms")

            model = shipped_prior(kernel) if strategy == "guided" else None
            res = search(kernel, space, measurer, strategy, budget=n_budget,
                         time_budget_s=max(limit_s, 1e-3) if limit_s is not None else None, seed=seed,
                         patience=patience, device_info=device, on_measure=record, model=model,
                         prior_records=prior_records(prior_db, kernel, device) if prior_db else None)
            bar.close()
            summaries.append(summarize(kernel, res, plot_dir, simulated))
            outer.update(1)
            if res.stopped == "interrupted":
                summaries.interrupted = True
                break
    except KeyboardInterrupt:  # between two kernels (plotting, space building): keep what is done
        summaries.interrupted = True
    finally:
        outer.close()
        db.close()
        summaries.seconds = time.perf_counter() - t_start
    return summaries


def shipped_prior(kernel):
    """The shipped default cost model as the guided search's prior for a GEMM kernel, if there is one. It is
    trained on GEMM sweeps only: a reduction or pointwise kernel starts from a fresh model, which learns its own
    family in full rounds instead of adding a few trees to one that never saw it."""
    return load_default_model() if template_info(kernel.template, kernel.shapes).family == "gemm" else None


def summarize(kernel, res: TuneResult, plot_dir: str | None = None, simulated: bool = False) -> KernelSummary:
    """One kernel's row of the summary table (and its tuning-curve PNG when `plot_dir` is given)."""
    best = res.best
    name = getattr(kernel, "name", kernel.key)
    desc = kernel.describe() if hasattr(kernel, "describe") else f"{kernel.template} {kernel.shapes}"
    s = KernelSummary(name, kernel.key, desc, res.default.time_ms if res.default else None,
                      best.time_ms if best else None, res.measurements, sum(not m.ok for m in res.history),
                      best.config if best else None, res, template=kernel.template,
                      shapes=format_shapes(kernel.shapes), dtype=dtype_name(kernel.dtype), simulated=simulated)
    if plot_dir:
        try:
            title = f"{name}: {kernel.template} {s.shapes} {s.dtype}"
            s.plot = plot_curve(res, Path(plot_dir) / f"{name}_{kernel.key}.png", title[:90], simulated)
        except Exception as e:  # a plot must never lose a tuning run
            s.plot = f"(plot failed: {type(e).__name__}: {e})"
    return s


def prior_records(path: str, kernel, device: DeviceInfo) -> list:
    """The ok records of this kernel (same key, shape, dtype) in another database, any device or Triton
    version, as cost-model records: what guided search starts from."""
    from .cost_model import Record
    from .device import lookup

    with ScheduleDB(path) as db:
        recs = db._records("WHERE kernel_key=? AND shape_key=? AND dtype=? AND status='ok'",
                           (kernel.key, shape_key(kernel.shapes), dtype_name(kernel.dtype)))
    out = []
    for r in recs:
        try:
            dev = lookup(r.device).to_dict()
        except KeyError:  # a GPU without a preset: its knob features are what transfers
            dev = device.to_dict()
        out.append(Record(r.template, dict(kernel.shapes), r.dtype, r.config, dev, r.time_ms, r.status, r.kernel_key))
    return out


def autotune_db(options) -> str:
    """Where max-autotune saves: the first schedule database given, else the default one (created if missing)."""
    from .database import default_db_path

    src = options.schedules
    path = str((src if isinstance(src, (str, os.PathLike)) else (src[0] if src else None)) or default_db_path())
    ScheduleDB(path).close()
    return path


def autotune_missing(kernels: list, options) -> list:
    """`mode="max-autotune"`: tune the kernels whose config came from no database (within
    `options.autotune_seconds` for all of them), save the records to the first schedule database (or the
    default one), and give each tuned kernel its best config. Returns the kernels tuned."""
    from .select import select_config

    todo = [k for k in kernels if k.info.get("config_source") == "default"]
    if not todo:
        return []
    src = options.schedules
    db_path = autotune_db(options)
    tune_kernels(todo, str(db_path), "small", progress=False, total_seconds=options.autotune_seconds)
    sources = [db_path] + ([s for s in src if s != db_path] if isinstance(src, (list, tuple)) else [])
    for k in todo:
        config, source = select_config(k, sources)
        k.config = dict(config)
        k.info["config_source"] = "tuned now (max-autotune)" if source == "database" else source
    return todo


def format_shapes(shapes: dict) -> str:
    """Compact problem sizes, e.g. "M=16 N=96 K=32" (a batch of 1 is left out)."""
    return " ".join(f"{k}={v}" for k, v in shapes.items() if not (k == "B" and v == 1))


def summary_table(rows: list[KernelSummary]) -> str:
    """Per kernel: name, template, shapes, default time, tuned time, speedup, measurements used (and failed);
    a total line sums the default and tuned times of the kernels tuned (each launched once)."""
    head = (f"{'kernel':<30} {'template':<9} {'shapes':<22} {'default ms':>10} {'tuned ms':>10} {'speedup':>8} "
            f"{'measured':>8} {'failed':>6}")
    lines = [head, "-" * len(head)]
    if any(r.simulated for r in rows):
        lines.insert(0, "SIMULATED times (no GPU or --simulate): a synthetic cost per config, not measurements; "
                        "every candidate was still run and checked for correctness")

    def fmt(x, spec):
        return format(x, spec) if x is not None else format("-", f">{spec.split('.')[0]}")

    for r in rows:
        sp = f"{r.speedup:.2f}x" if r.speedup else "-"
        mark = " (interrupted)" if r.result.stopped == "interrupted" else ""
        lines.append(f"{r.name[:30]:<30} {r.template[:9]:<9} {r.shapes[:22]:<22} {fmt(r.default_ms, '10.4f')} "
                     f"{fmt(r.tuned_ms, '10.4f')} {sp:>8} {r.measurements:>8} {r.failed:>6}{mark}")
    both = [r for r in rows if r.default_ms and r.tuned_ms]
    if both:
        d, t = sum(r.default_ms for r in both), sum(r.tuned_ms for r in both)
        lines.append("-" * len(head))
        lines.append(f"{'total (' + str(len(both)) + ' kernels)':<63} {d:10.4f} {t:10.4f} {d / t:7.2f}x "
                     f"{sum(r.measurements for r in rows):>8} {sum(r.failed for r in rows):>6}")
    return "\n".join(lines)
