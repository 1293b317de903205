"""Search strategies over a config space and the one tune loop that drives them (TVM MetaSchedule's split).

A `SearchStrategy` only proposes configs (`propose(n)`) and learns from their measurements (`observe`); the
loop in `tune()` owns measuring, dedup, budgets and stopping. Strategies: exhaustive, random, and evolutionary
(breeds from the best measured configs; with a `CostModel` its offspring are ranked by the model first, which
is the "guided" search). The loop measures the kernel's default config first (the baseline) unless
`measure_default=False` (e.g. a transferred model already knows better), never measures a config twice (a failed
one is not retried), stops at a budget of measurements and/or seconds, early after `patience` measurements with no
improvement, or at `target_ms`; every measurement is kept in `TuneResult.history`.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .cost_model import CostModel, Record, XGBoostCostModel
from .device import DeviceInfo
from .measure import Measurement, Measurer
from .spaces import Config, ConfigSpace, config_key

STRATEGIES = ("guided", "evolutionary", "random", "exhaustive")


@dataclass
class TuneResult:
    """Everything one search did for one kernel."""

    kernel: str
    strategy: str
    history: list[Measurement] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # why the search ended: budget | time | patience | space exhausted | interrupted | target
    default: Measurement | None = None  # the default config's measurement (None when it was skipped)

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


class SearchStrategy(Protocol):
    """Proposes configs to measure and learns from what was measured; never measures anything itself."""

    def propose(self, n: int) -> list[Config]:
        """Up to n configs not proposed before; [] when the strategy has nothing left."""

    def observe(self, results: list[Measurement]) -> None:
        """Measurements of proposed (or other, e.g. the default) configs."""


class _Strategy:
    """Shared state: the space, an rng, every config proposed or observed (never proposed again)."""

    def __init__(self, space: ConfigSpace, seed: int = 0):
        self.space, self.rng = space, random.Random(seed)
        self.seen: set[str] = set()
        self.measured: list[Measurement] = []

    def observe(self, results: list[Measurement]) -> None:
        for m in results:
            self.seen.add(config_key(m.config))
            self.measured.append(m)

    def _take(self, configs, n: int) -> list[Config]:
        out = []
        for c in configs:
            k = config_key(c)
            if k not in self.seen:
                self.seen.add(k)
                out.append(c)
                if len(out) >= n:
                    break
        return out


class ExhaustiveSearch(_Strategy):
    """Every valid config in the space's fixed order."""

    def __init__(self, space: ConfigSpace, seed: int = 0):
        super().__init__(space, seed)
        self._order = space.enumerate()

    def propose(self, n: int) -> list[Config]:
        return self._take(self._order, n)


class RandomSearch(ExhaustiveSearch):
    """Every valid config in a seeded random order (sampling without replacement)."""

    def __init__(self, space: ConfigSpace, seed: int = 0):
        super().__init__(space, seed)
        self.rng.shuffle(self._order)


class EvolutionarySearch(_Strategy):
    """Each round: breed a pool from the best measured configs (neighbours, mutation, crossover) plus random
    samples. With a cost model (the guided search), the pool evolves a few generations on predicted scores and
    the model's top picks plus an `epsilon` share of random pool members are proposed; the model is retrained on
    `prior` records (transfer) plus this run's measurements as they arrive. A model that is already trained is
    used from the first proposal, before any config has run. Without a model, offspring are proposed at random."""

    def __init__(self, space: ConfigSpace, kernel, device: DeviceInfo, model: CostModel | None = None,
                 prior: list[Record] | None = None, seed: int = 0, epsilon: float = 0.15, parents: int = 8):
        super().__init__(space, seed)
        self.kernel, self.device, self.model, self.epsilon, self.n_parents = kernel, device, model, epsilon, parents
        self.prior = list(prior or [])
        self.own: list[Record] = []
        self._stalls = 0
        self._trained = bool(model is not None and getattr(model, "trained", False))

    def observe(self, results: list[Measurement]) -> None:
        super().observe(results)
        self.own.extend(to_record(self.kernel, m, self.device) for m in results)

    def _refit(self) -> bool:
        if self.model is None:
            return False
        n_ok = sum(r.status == "ok" for r in self.own)
        if n_ok >= 2 or (self.prior and not self._trained):
            try:
                self.model.fit(self.prior + self.own)
                self._trained = True
            except ValueError:  # no problem with >= 2 configs yet
                pass
        return self._trained

    def _score(self, configs: list[Config]):
        k = self.kernel
        return self.model.predict(k.template, k.shapes, k.dtype, configs, self.device)

    def propose(self, n: int) -> list[Config]:
        space, rng = self.space, self.rng
        have_model = self._refit()
        ok = sorted((m for m in self.measured if m.ok), key=lambda m: m.time_ms)
        parents = [m.config for m in ok[:self.n_parents]]
        pool: dict[str, Config] = {}

        def add(c):
            k = config_key(c)
            if k not in self.seen:
                pool[k] = c

        for p in parents:
            for c in space.neighbors(p):
                add(c)
            for _ in range(6):
                add(space.mutate(p, rng, n_knobs=rng.choice((1, 1, 2))))
                add(space.crossover(p, rng.choice(parents), rng))
        for _ in range(64 if parents else 512):  # no parent yet: a wide random pool for the model to rank
            add(space.sample(rng))
        if not have_model:
            cands = list(pool.values())
            rng.shuffle(cands)
            picks = self._take(cands, n)
        else:
            for _gen in range(2):  # evolve on predicted fitness
                cands = list(pool.values())
                if not cands:
                    break
                s = self._score(cands)
                elite = [cands[i] for i in sorted(range(len(cands)), key=lambda i: -s[i])[:16]]
                for e in elite:
                    add(space.mutate(e, rng))
                    add(space.crossover(e, rng.choice(elite), rng))
            cands = list(pool.values())
            picks = []
            if cands:
                s = self._score(cands)
                order = [cands[i] for i in sorted(range(len(cands)), key=lambda i: -s[i])]
                n_explore = max(1, round(self.epsilon * n)) if len(cands) > n else 0
                picks = self._take(order[:n - n_explore], n - n_explore)
                rest = order[n - n_explore:]
                picks += self._take(rng.sample(rest, min(n_explore, len(rest))), n_explore)
        if picks:
            self._stalls = 0
            return picks
        self._stalls += 1  # nothing new bred: the space is (nearly) exhausted; after 3 tries, enumerate the rest
        return self.propose(n) if self._stalls < 3 else self._take(space.enumerate(), n)


def make_strategy(name: str, space: ConfigSpace, kernel, device: DeviceInfo | None = None, seed: int = 0,
                  model: CostModel | None = None, prior_records: list[Record] | None = None,
                  epsilon: float = 0.15) -> SearchStrategy:
    """A strategy by name: exhaustive | random | evolutionary (no model) | guided (evolutionary + cost model,
    a fresh XGBoost ranker unless `model` is given)."""
    if name == "exhaustive":
        return ExhaustiveSearch(space, seed)
    if name == "random":
        return RandomSearch(space, seed)
    if name in ("guided", "evolutionary"):
        if name == "guided" and model is None:
            model = XGBoostCostModel()
        return EvolutionarySearch(space, kernel, device or DeviceInfo.detect(), model if name == "guided" else None,
                                  prior_records, seed, epsilon)
    raise ValueError(f"unknown search strategy {name!r}; choose one of {STRATEGIES}")


class _Run:
    """The tune loop's bookkeeping: budget, time limit, patience, target, dedup, callbacks."""

    def __init__(self, kernel, measurer: Measurer, budget: int | None, time_budget_s: float | None,
                 patience: int | None, on_measure: Callable[[Measurement], None] | None, strategy: str,
                 target_ms: float | None = None):
        self.target_ms = target_ms
        self.kernel, self.measurer, self.on_measure = kernel, measurer, on_measure
        self.budget = budget if budget is not None else 10 ** 9
        self.deadline = time.perf_counter() + time_budget_s if time_budget_s else None
        self.patience = patience
        self.result = TuneResult(getattr(kernel, "name", kernel.key), strategy)
        self.seen: set[str] = set()
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
        self.seen.add(k)
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


def tune(kernel, strategy: SearchStrategy, measurer: Measurer, budget: int | None = 64,
         time_budget_s: float | None = None, patience: int | None = None, batch_size: int = 8,
         measure_default: bool = True, on_measure: Callable[[Measurement], None] | None = None,
         target_ms: float | None = None, name: str = "") -> TuneResult:
    """The tune loop: (measure the default,) then propose a batch, measure it, let the strategy observe, repeat
    until a stop condition or the strategy runs dry. Ctrl-C / SIGTERM keeps what was measured ("interrupted")."""
    run = _Run(kernel, measurer, budget, time_budget_s, patience, on_measure, name or type(strategy).__name__,
               target_ms)
    try:
        if measure_default:
            m = run.measure(kernel.default_config())
            run.result.default = m
            if m is not None:
                strategy.observe([m])
        while not run.done():
            configs = strategy.propose(batch_size)
            if not configs:
                run.result.stopped = "space exhausted"
                break
            got = [m for m in (run.measure(c) for c in configs) if m is not None]
            strategy.observe(got)
    except KeyboardInterrupt:  # the caller decides to stop
        run.result.stopped = "interrupted"
    run.result.seconds = time.perf_counter() - run.t0
    run.result.stopped = run.result.stopped or "space exhausted"
    return run.result


def search(kernel, space: ConfigSpace, measurer: Measurer, strategy: str = "guided", budget: int | None = 64,
           time_budget_s: float | None = None, seed: int = 0, patience: int | None = None,
           device_info: DeviceInfo | None = None, model: CostModel | None = None,
           prior_records: list[Record] | None = None, batch_size: int = 8, epsilon: float = 0.15,
           on_measure: Callable[[Measurement], None] | None = None, target_ms: float | None = None,
           measure_default: bool = True) -> TuneResult:
    """Tune one kernel with a strategy named by `strategy` (see `make_strategy`). `model`/`prior_records` let
    guided search start from earlier knowledge (transfer); `target_ms` stops once a config at least that fast is
    found (benchmarks of search cost); `measure_default=False` skips measuring the default config first."""
    strat = make_strategy(strategy, space, kernel, device_info, seed, model, prior_records, epsilon)
    batch = batch_size if strategy in ("guided", "evolutionary") else 1
    return tune(kernel, strat, measurer, budget, time_budget_s, patience, batch, measure_default, on_measure,
                target_ms, strategy)
