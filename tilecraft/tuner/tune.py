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
from .measure import Measurement, simulated_measurer_factory
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
    template: str = ""
    shapes: str = ""
    dtype: str = ""

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
                 total_seconds: float | None = None) -> TuneSummaries:
    """Tune each distinct kernel (by key, shapes, dtype); every measurement is committed to the DB at once.

    `budget` is measurements per kernel or a preset name; `time_budget_s` caps seconds per kernel and
    `total_seconds` the whole run (the time left is shared among the kernels left, matmuls getting 3 shares).
    On KeyboardInterrupt (Ctrl-C, or SIGTERM turned into one by the CLI) the run stops and returns what it has:
    the interrupted kernel's summary included, `interrupted` set; its measurements are already in the DB."""
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

            def record(m: Measurement, kernel=kernel, bar=bar) -> None:
                db.add(ScheduleRecord(kernel.key, kernel.template, shape_key(kernel.shapes), dtype_name(kernel.dtype),
                                      device.name, device.capability_str, triton.__version__, m.config, m.time_ms,
                                      m.status, m.timestamp, m.error))
                bar.update(1)
                if m.ok:
                    bar.set_postfix_str(f"{m.time_ms:.4g} ms")

            model = load_default_model() if strategy == "guided" else None  # the shipped prior, if any
            res = search(kernel, space, measurer_factory(kernel, space), strategy, budget=n_budget,
                         time_budget_s=max(limit_s, 1e-3) if limit_s is not None else None, seed=seed,
                         patience=patience, device_info=device, on_measure=record, model=model)
            bar.close()
            summaries.append(summarize(kernel, res, plot_dir))
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


def summarize(kernel, res: TuneResult, plot_dir: str | None = None) -> KernelSummary:
    """One kernel's row of the summary table (and its tuning-curve PNG when `plot_dir` is given)."""
    best = res.best
    name = getattr(kernel, "name", kernel.key)
    desc = kernel.describe() if hasattr(kernel, "describe") else f"{kernel.template} {kernel.shapes}"
    s = KernelSummary(name, kernel.key, desc, res.default.time_ms if res.default else None,
                      best.time_ms if best else None, res.measurements, sum(not m.ok for m in res.history),
                      best.config if best else None, res, template=kernel.template,
                      shapes=format_shapes(kernel.shapes), dtype=dtype_name(kernel.dtype))
    if plot_dir:
        try:
            title = f"{name}: {kernel.template} {s.shapes} {s.dtype}"
            s.plot = plot_curve(res, Path(plot_dir) / f"{name}_{kernel.key}.png", title[:90])
        except Exception as e:  # a plot must never lose a tuning run
            s.plot = f"(plot failed: {type(e).__name__}: {e})"
    return s


def format_shapes(shapes: dict) -> str:
    """Compact problem sizes, e.g. "M=16 N=96 K=32" (a batch of 1 is left out)."""
    return " ".join(f"{k}={v}" for k, v in shapes.items() if not (k == "B" and v == 1))


def summary_table(rows: list[KernelSummary]) -> str:
    """Per kernel: name, template, shapes, default time, tuned time, speedup, measurements used (and failed);
    a total line sums the default and tuned times of the kernels tuned (each launched once)."""
    head = (f"{'kernel':<30} {'template':<9} {'shapes':<22} {'default ms':>10} {'tuned ms':>10} {'speedup':>8} "
            f"{'measured':>8} {'failed':>6}")
    lines = [head, "-" * len(head)]

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
