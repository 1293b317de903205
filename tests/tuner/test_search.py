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


def _roofline_prior(shapes_list, per_shape=60, seed=0):
    import random

    from tilecraft.tuner.cost_model import Record
    from tilecraft.tuner.measure import roofline_gemm_ms

    rng, out = random.Random(seed), []
    for shapes in shapes_list:
        sp = space_for("matmul", shapes, torch.float16, H100)
        for c in {config_key(c): c for c in (sp.sample(rng) for _ in range(per_shape))}.values():
            out.append(Record("matmul", dict(shapes), "float16", c, "H100", roofline_gemm_ms(shapes, c, H100)))
    return out


def test_transfer_model_is_used_before_any_config_has_run_and_the_default_can_be_skipped():
    """Issue 18: with a model trained on other shapes, guided search ranked its first batch at random until some
    config had succeeded (here the default fails), and it always spent its first measurement on the default."""
    from tilecraft.tuner.measure import roofline_gemm_ms

    prior = _roofline_prior([{"M": m, "N": n, "K": kk} for m, n, kk in
                             [(4096, 4096, 4096), (1024, 1024, 1024), (128, 4096, 11008), (512, 512, 8192),
                              (2048, 5632, 2048), (8192, 8192, 8192)]])
    k = ReferenceGemm(3000, 1000, 700, torch.float16)
    sp = space_for("matmul", k.shapes, k.dtype, H100)
    default_key = config_key(k.default_config())

    def surface(c):
        if config_key(c) == default_key:
            raise RuntimeError("simulated out of resources")
        return roofline_gemm_ms(k.shapes, c, H100)

    best = min(roofline_gemm_ms(k.shapes, c, H100) for c in sp.enumerate())
    target = best * 1.05
    rand = [search(k, sp, SimulatedMeasurer(surface), "random", budget=400, seed=s, target_ms=target)
            .measurements_to_reach(target) or 400 for s in range(4)]
    r = search(k, sp, SimulatedMeasurer(surface), "guided", budget=60, device_info=H100, prior_records=prior,
               batch_size=4, target_ms=target)
    assert r.history[0].status == "failed" and r.default is r.history[0]
    first_batch = min(m.time_ms for m in r.history[1:5] if m.ok)
    assert first_batch <= 1.2 * best, first_batch / best  # the model's top picks, not 4 random configs
    n_transfer = r.measurements_to_reach(target)
    assert n_transfer is not None and n_transfer < statistics.mean(rand) / 2, (n_transfer, rand)
    skip = search(k, sp, SimulatedMeasurer(surface), "guided", budget=60, device_info=H100, prior_records=prior,
                  batch_size=4, target_ms=target, measure_default=False)
    assert skip.default is None and default_key not in {config_key(m.config) for m in skip.history}
    assert min(m.time_ms for m in skip.history[:4] if m.ok) <= 1.2 * best
    print("to 5%: transfer", n_transfer, "skipping the default", skip.measurements_to_reach(target), "random", rand)


def test_strategies_propose_and_observe_through_one_tune_loop():
    from tilecraft.tuner.search import EvolutionarySearch, ExhaustiveSearch, RandomSearch, tune

    k, sp = _setup()
    surf = SyntheticSurface(sp, seed=3)
    n = sp.size()
    ex = ExhaustiveSearch(sp)
    first = ex.propose(5)
    assert first == sp.enumerate()[:5] and ex.propose(3) == sp.enumerate()[5:8]
    for strat in (RandomSearch(sp, seed=1), EvolutionarySearch(sp, k, H100, model=None, seed=1)):
        r = tune(k, strat, SimulatedMeasurer(surf), budget=None, measure_default=False, batch_size=16)
        keys = [config_key(m.config) for m in r.history]
        assert len(keys) == len(set(keys)) == n and r.stopped == "space exhausted", type(strat).__name__
        assert r.best.time_ms == surf.optimum()[1]
