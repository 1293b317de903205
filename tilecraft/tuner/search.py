"""Search strategies over a config space: exhaustive, random, and cost-model-guided evolutionary search.

All strategies measure the default config first (the baseline and the correctness reference), never measure a
config twice (a failed one is not retried), stop at a budget of measurements and/or seconds or early when
`patience` measurements bring no improvement, and keep every measurement in `TuneResult.history`.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from .cost_model import CostModel, Record
from .device import DeviceInfo
from .measure import Measurement, Measurer
from .spaces import ConfigSpace, config_key

STRATEGIES = ("guided", "random", "exhaustive")


@dataclass
class TuneResult:
    """Everything one search did for one kernel."""

    kernel: str
    strategy: str
    history: list[Measurement] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # why the search ended: budget | time | patience | space exhausted | interrupted

    @property
    def default(self) -> Measurement | None:
        return self.history[0] if self.history else None

    @property
    def best(self) -> Measurement | None:
        ok = [m for m in self.history if m.ok]
        return min(ok, key=lambda m: m.time_ms) if ok else None

    @property
    def measurements(self) -> int:
        return len(self.history)

    def curve(self) -> list[float]:
        """Best time so far after each measurement (inf before the first success)."""
        out, best = [], math.inf
        for m in self.history:
            if m.ok:
                best = min(best, m.time_ms)
            out.append(best)
        return out

    def measurements_to_reach(self, target_ms: float) -> int | None:
        """How many measurements it took until the best time was <= target_ms (None if never)."""
        for i, t in enumerate(self.curve()):
            if t <= target_ms:
                return i + 1
        return None


def to_record(kernel, m: Measurement, device: DeviceInfo) -> Record:
    return Record(kernel.template, dict(kernel.shapes), str(kernel.dtype).replace("torch.", ""), dict(m.config),
                  device.to_dict(), m.time_ms, m.status, getattr(kernel, "key", ""))


class _Run:
    """Shared bookkeeping: budget, time limit, patience, dedup, callbacks."""

    def __init__(self, kernel, measurer: Measurer, budget: int | None, time_budget_s: float | None,
                 patience: int | None, on_measure: Callable[[Measurement], None] | None, strategy: str,
                 target_ms: float | None = None):
        self.target_ms = target_ms
        self.kernel, self.measurer, self.on_measure = kernel, measurer, on_measure
        self.budget = budget if budget is not None else 10 ** 9
        self.deadline = time.perf_counter() + time_budget_s if time_budget_s else None
        self.patience = patience
        self.result = TuneResult(getattr(kernel, "name", kernel.key), strategy)
        self.seen: dict[str, Measurement] = {}
        self.t0 = time.perf_counter()
        self._best = math.inf
        self._since_improvement = 0

    def done(self) -> bool:
        r = self.result
        if len(r.history) >= self.budget:
            r.stopped = "budget"
        elif self.deadline is not None and time.perf_counter() >= self.deadline:
            r.stopped = "time"
        elif self.patience is not None and self._since_improvement >= self.patience:
            r.stopped = "patience"
        elif self.target_ms is not None and self._best <= self.target_ms:
            r.stopped = "target reached"
        return bool(r.stopped)

    def measure(self, config: dict) -> Measurement | None:
        k = config_key(config)
        if k in self.seen or self.done():
            return None
        m = self.measurer.measure(self.kernel, config)
        self.seen[k] = m
        self.result.history.append(m)
        if m.ok and m.time_ms < self._best * 0.99:
            self._since_improvement = 0
        else:
            self._since_improvement += 1
        if m.ok:
            self._best = min(self._best, m.time_ms)
        if self.on_measure:
            self.on_measure(m)
        return m

    def finish(self) -> TuneResult:
        self.result.seconds = time.perf_counter() - self.t0
        self.result.stopped = self.result.stopped or "space exhausted"
        return self.result


def search(kernel, space: ConfigSpace, measurer: Measurer, strategy: str = "guided", budget: int | None = 64,
           time_budget_s: float | None = None, seed: int = 0, patience: int | None = None,
           device_info: DeviceInfo | None = None, model: CostModel | None = None,
           prior_records: list[Record] | None = None, batch_size: int = 8, epsilon: float = 0.15,
           on_measure: Callable[[Measurement], None] | None = None, target_ms: float | None = None) -> TuneResult:
    """Tune one kernel. `model`/`prior_records` let guided search start from earlier knowledge (transfer);
    `target_ms` stops the search once a config at least that fast is found (for benchmarks of search cost)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; choose one of {STRATEGIES}")
    rng = random.Random(seed)
    run = _Run(kernel, measurer, budget, time_budget_s, patience, on_measure, strategy, target_ms)
    default = kernel.default_config()
    try:
        run.measure(default)
        if strategy == "exhaustive":
            for c in space.enumerate():
                if run.done():
                    break
                run.measure(c)
        elif strategy == "random":
            configs = space.enumerate()
            rng.shuffle(configs)
            for c in configs:
                if run.done():
                    break
                run.measure(c)
        else:
            _guided(run, space, rng, device_info, model or CostModel(), list(prior_records or []), batch_size,
                    epsilon)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep what was measured, the caller decides to stop
        run.result.stopped = "interrupted"
    return run.finish()


def _guided(run: _Run, space: ConfigSpace, rng: random.Random, device: DeviceInfo | None, model: CostModel,
            prior: list[Record], batch_size: int, epsilon: float) -> None:
    """Evolutionary search whose fitness is the cost model: each round, breed a pool from the best measured
    configs (mutation, crossover, neighbours) plus random samples, evolve it a few generations on predicted
    scores, measure the model's top picks plus an epsilon share of random ones, retrain the model."""
    device = device or DeviceInfo.detect()
    kernel = run.kernel
    own: list[Record] = [to_record(kernel, m, device) for m in run.result.history]

    def score(configs: list[dict]):
        return model.predict(kernel.template, kernel.shapes, kernel.dtype, configs, device)

    def refit() -> bool:
        data = prior + own
        if sum(r.status == "ok" for r in own) >= 2 or (prior and not own[1:]):
            try:
                model.fit(data)
                return True
            except ValueError:
                return model.trained
        return model.trained

    stalls = 0
    while not run.done():
        have_model = refit()
        measured_ok = sorted((m for m in run.result.history if m.ok), key=lambda m: m.time_ms)
        parents = [m.config for m in measured_ok[:8]]
        if not have_model or not parents:
            picks = [space.sample(rng) for _ in range(batch_size)]
        else:
            pool: dict[str, dict] = {}

            def add(c):
                k = config_key(c)
                if k not in run.seen:
                    pool[k] = c

            for p in parents:
                for c in space.neighbors(p):
                    add(c)
                for _ in range(6):
                    add(space.mutate(p, rng, n_knobs=rng.choice((1, 1, 2))))
                    add(space.crossover(p, rng.choice(parents), rng))
            for _ in range(64):
                add(space.sample(rng))
            for _gen in range(2):  # evolve on predicted fitness
                cands = list(pool.values())
                if not cands:
                    break
                s = score(cands)
                elite = [cands[i] for i in sorted(range(len(cands)), key=lambda i: -s[i])[:16]]
                for e in elite:
                    add(space.mutate(e, rng))
                    add(space.crossover(e, rng.choice(elite), rng))
            cands = list(pool.values())
            if not cands:
                picks = [space.sample(rng) for _ in range(batch_size)]
            else:
                s = score(cands)
                order = sorted(range(len(cands)), key=lambda i: -s[i])
                n_explore = max(1, round(epsilon * batch_size)) if len(cands) > batch_size else 0
                picks = [cands[i] for i in order[:batch_size - n_explore]]
                rest = [cands[i] for i in order[batch_size - n_explore:]]
                picks += rng.sample(rest, min(n_explore, len(rest)))
        before = len(run.result.history)
        for c in picks:
            m = run.measure(c)
            if m is not None:
                own.append(to_record(kernel, m, device))
        if len(run.result.history) == before:  # nothing new to measure: space (nearly) exhausted
            stalls += 1
            if stalls >= 3:
                for c in space.enumerate():
                    run.measure(c)
                return
