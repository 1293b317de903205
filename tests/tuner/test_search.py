"""Search strategies on a simulated cost surface: guided beats random; budgets, failures, early stopping."""
import statistics

import torch

from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.measure import Measurement, SimulatedMeasurer, SyntheticSurface
from tilecraft.tuner.reference_kernels import ReferenceGemm
from tilecraft.tuner.search import search
from tilecraft.tuner.spaces import config_key, restrict, space_for

H100 = PRESETS["H100"]


def _setup():
    k = ReferenceGemm(1024, 1024, 1024, torch.float16)
    sp = restrict(space_for("matmul", k.shapes, k.dtype, H100), BLOCK_M=[32, 64, 128, 256], BLOCK_N=[32, 64, 128, 256],
                  BLOCK_K=[32, 64, 128], GROUP_M=[1, 8], num_warps=[4, 8], SPLIT_K=[1, 2],
                  num_stages=[3, 4])
    return k, sp


def test_guided_reaches_the_optimum_with_fewer_measurements_than_random():
    k, sp = _setup()
    n = sp.size()
    assert 200 < n < 800
    guided, rand = [], []
    for seed in range(6):
        surf = SyntheticSurface(sp, seed=seed)
        _, best_ms = surf.optimum()
        for strat, out in (("guided", guided), ("random", rand)):
            r = search(k, sp, SimulatedMeasurer(surf), strat, budget=n + 1, seed=seed, device_info=H100,
                       target_ms=best_ms)
            reached = r.measurements_to_reach(best_ms)
            assert reached is not None, (strat, seed)
            assert r.best.time_ms == best_ms
            out.append(reached)
    ratio = statistics.mean(guided) / statistics.mean(rand)
    print(f"space {n}: guided {guided} random {rand} ratio {ratio:.2f}")
    assert ratio < 0.3, (guided, rand)


def test_exhaustive_measures_each_valid_config_once_and_records_failures():
    k, sp = _setup()
    surf = SyntheticSurface(sp, seed=1, fail_rate=0.1)
    seen = []
    r = search(k, sp, SimulatedMeasurer(surf), "exhaustive", budget=None, on_measure=seen.append)
    keys = [config_key(m.config) for m in r.history]
    assert len(keys) == len(set(keys)) == sp.size() + (0 if sp.valid(k.default_config()) else 1)
    assert seen == r.history and r.stopped == "space exhausted"
    failed = [m for m in r.history if not m.ok]
    assert failed and all(m.error == "RuntimeError: simulated out of resources" for m in failed)
    assert all(surf.fails(m.config) for m in failed)
    assert r.best.time_ms == surf.optimum()[1]
    curve = r.curve()
    assert all(a >= b for a, b in zip(curve, curve[1:]))


def test_budget_time_and_patience_stop_the_search():
    k, sp = _setup()
    surf = SyntheticSurface(sp, seed=2)
    assert search(k, sp, SimulatedMeasurer(surf), "random", budget=7).measurements == 7
    r = search(k, sp, SimulatedMeasurer(surf), "guided", budget=500, patience=10, device_info=H100)
    assert r.stopped == "patience" and r.measurements < 500
    r = search(k, sp, SimulatedMeasurer(surf), "guided", budget=None, time_budget_s=0.5, device_info=H100)
    assert r.stopped == "time" and r.measurements < sp.size()


def test_guided_search_survives_failing_candidates_without_retrying_them():
    k, sp = _setup()
    calls = []

    class Flaky:
        def measure(self, kernel, config):
            calls.append(config_key(config))
            if config["BLOCK_K"] == 128:
                return Measurement(config, "failed", None, "OutOfResources: shared memory")
            return Measurement(config, "ok", SyntheticSurface(sp, seed=0).time_ms(config))

    r = search(k, sp, Flaky(), "guided", budget=60, device_info=H100)
    assert r.measurements == 60 and len(calls) == len(set(calls)) == 60
    assert r.best.config["BLOCK_K"] != 128
