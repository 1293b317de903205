"""The XGBoost ranking model: ranks held-out kernel problems well, save/load exact, JSON-lines records."""
import random

import numpy as np
import pytest

from tilecraft.tuner.cost_model import (XGBoostCostModel, Record, evaluate, load_records, pairwise_accuracy,
                                        save_records, score_records, top_k_recall)
from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.measure import roofline_gemm_ms
from tilecraft.tuner.spaces import space_for

H100 = PRESETS["H100"]


def _records(shapes_list, per_shape, seed):
    rng = random.Random(seed)
    out = []
    for shapes in shapes_list:
        sp = space_for("matmul", shapes, "float16", H100)
        configs = {str(sorted(c.items())): c for c in (sp.sample(rng) for _ in range(per_shape * 2))}
        for c in list(configs.values())[:per_shape]:
            out.append(Record("matmul", dict(shapes), "float16", c, "H100", roofline_gemm_ms(shapes, c, H100)))
    return out


def _shapes(rng, n):
    return [{"M": 2 ** rng.randint(4, 13), "N": 2 ** rng.randint(8, 13), "K": 2 ** rng.randint(8, 14)}
            for _ in range(n)]


def test_ranks_held_out_problems_far_better_than_chance_and_save_load_is_exact(tmp_path):
    rng = random.Random(0)
    shapes = _shapes(rng, 18)
    train, test = _records(shapes[:14], 40, 1), _records(shapes[14:], 40, 2)
    model = XGBoostCostModel().fit(train)
    m = evaluate(model, test, k=5)
    print(m)
    assert m["groups"] == 4 and m["pairwise_accuracy"] > 0.75, m
    assert m["top5_recall"] > 5 / 40 * 2, m  # chance is k/n per group
    shuffled = list(score_records(model, test))
    random.Random(1).shuffle(shuffled)
    assert pairwise_accuracy(test, shuffled) < 0.65  # the metric itself is not trivially high
    path = tmp_path / "model.json"
    model.save(path)
    loaded = XGBoostCostModel.load(path)
    assert np.array_equal(np.asarray(score_records(loaded, test)), np.asarray(score_records(model, test)))


def test_metrics_by_hand():
    recs = [Record("matmul", {"M": 1, "N": 16, "K": 16}, "float16", {"i": i}, "H100", t) for i, t in
            enumerate([1.0, 2.0, 3.0, 4.0])]
    assert pairwise_accuracy(recs, [4, 3, 2, 1]) == 1.0
    assert pairwise_accuracy(recs, [1, 2, 3, 4]) == 0.0
    assert pairwise_accuracy(recs, [4, 3, 1, 2]) == 5 / 6
    assert top_k_recall(recs, [4, 1, 3, 2], k=2) == 0.5


def test_jsonl_import_and_scoring_records_from_elsewhere(tmp_path):
    rng = random.Random(5)
    recs = _records(_shapes(rng, 6), 30, 3)
    recs.append(Record("matmul", {"M": 64, "N": 64, "K": 64}, "float16",
                       {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1, "SPLIT_K": 1, "num_warps": 4,
                        "num_stages": 3}, H100.to_dict(), None, "failed"))
    path = tmp_path / "m.jsonl"
    save_records(recs, path)
    back = load_records(path)
    assert [r.to_json() for r in back] == [r.to_json() for r in recs]
    model = XGBoostCostModel(num_rounds=30).fit(back[:120])
    s = score_records(model, back[120:])
    assert len(s) == len(back) - 120 and all(isinstance(x, float) for x in s)
    (tmp_path / "bad.jsonl").write_text('{"template": "matmul"}\n')
    try:
        load_records(tmp_path / "bad.jsonl")
    except ValueError as e:
        assert "bad.jsonl:1" in str(e) and "lacks" in str(e)
    else:
        raise AssertionError("a record without shapes/config must be rejected")


def test_load_records_reads_sweep_files_and_old_tune_gemm_summaries(tmp_path):
    """Issue 18: load_records read JSON lines only; sweep files are one JSON document with a "records" list."""
    import json
    from pathlib import Path

    recs = _records(_shapes(random.Random(7), 2), 5, 4)
    doc = {"device": H100.to_dict(), "records": [r.to_json() for r in recs]}
    (tmp_path / "sweep.json").write_text(json.dumps(doc, indent=1))
    back = load_records(tmp_path / "sweep.json")
    assert [r.to_json() for r in back] == [r.to_json() for r in recs]
    (tmp_path / "list.json").write_text(json.dumps(doc["records"]))
    assert len(load_records(tmp_path / "list.json")) == len(recs)
    doc["records"][3] = {"template": "matmul"}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad.json: records\[3\]: .*lacks"):
        load_records(tmp_path / "bad.json")
    # the H100 run-3 summary of bench/tune_gemm.py: best configs (cuBLAS section), default and best (codegen)
    old = Path(__file__).resolve().parents[2] / "bench/results/h100-2026-11-23/run3/tune_gemm.json"
    got = load_records(old)
    raw = json.loads(old.read_text())
    assert len(got) == len(raw["cublas"]) + 2 * len(raw["codegen"])
    r0 = got[0]
    assert r0.shapes == dict(zip("MNK", raw["cublas"][0]["shape"])) and r0.time_ms == raw["cublas"][0]["best_ms"]
    assert r0.device_info().name == "NVIDIA H100 80GB HBM3" and r0.status == "ok"


def test_roofline_surface_refuses_configs_past_the_shared_memory_limit():
    """Issue 18: the roofline time had no shared-memory limit, so its top pick could be a config that fails."""
    shapes = {"M": 4096, "N": 4096, "K": 4096}
    ok = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8, "SPLIT_K": 1, "num_warps": 8,
          "num_stages": 4}  # 3 buffers x 64 KB = 192 KB <= 227 KB
    assert roofline_gemm_ms(shapes, ok, H100) > 0
    with pytest.raises(RuntimeError, match="out of resources: shared memory 262144 B > 232448 B"):
        roofline_gemm_ms(shapes, dict(ok, num_stages=5), H100)


def test_the_analytic_prior_is_the_hand_computed_estimate_and_prefers_unpadded_tiles():
    import math

    from tilecraft.tuner.features import featurize

    cfg = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    f = featurize("matmul", {"M": 4096, "N": 4096, "K": 4096}, "float16", cfg, H100)
    # 512 tiles, one resident per SM (a 128-register accumulator x 256 threads fills the register file): 4 waves of
    # 64 K steps, each the largest of its MMA time, its L2 loads ((128 + 256) x 64 fp16 at 2.5 x 3 TB/s over 132
    # SMs) and the 0.8 us latency over 2 loads in flight; over the compute floor 2*4096^3 / 700 TFLOP/s
    step = max(2 * 128 * 256 * 64 / (700e12 / 132), (128 + 256) * 64 * 2 / (3000e9 * 2.5 / 132), 0.8e-6 / 2)
    assert f["blocks_per_sm"] == 1 and f["waves"] == pytest.approx(512 / 132)
    assert f["analytic_log"] == pytest.approx(math.log2(4 * 64 * step / (2 * 4096 ** 3 / 700e12)), rel=1e-6)
    # M=16 (memory bound): a 64-row tile loads 4x the rows of A for nothing (measured 1.75x slower on the H200)
    small = {"M": 16, "N": 4096, "K": 4096}
    cfg = {"BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 1, "num_warps": 4, "num_stages": 4}
    est = {bm: featurize("matmul", small, "float16", {**cfg, "BLOCK_M": bm}, H100)["analytic_log"] for bm in (16, 64)}
    assert est[16] < est[64]


def test_relevance_orders_every_pair_and_the_model_starts_from_the_prior():
    from tilecraft.tuner.cost_model import prior_margin, relevance

    assert relevance([1.0, 2.0, None, 4.0]) == pytest.approx([0.0, -1.0, -3.0, -2.0])  # failed: below the slowest
    recs = _records(_shapes(random.Random(5), 3), 20, 6)
    m = XGBoostCostModel(num_rounds=1, params={"eta": 1e-6}).fit(recs)  # trees that add ~nothing
    x = np.asarray([r.features() for r in recs], dtype=np.float32)
    prior = prior_margin(x)
    assert np.ptp(prior) > 1.0 and np.allclose(prior, -x[:, list(m.booster.feature_names).index("analytic_log")])
    scores = m.predict_records(recs)
    assert np.allclose(scores - scores[0], prior - prior[0], atol=1e-3)


def test_the_shipped_default_model_loads_with_the_current_features(monkeypatch):
    """bench/eval_cost_model.py --save-default writes it from the H200 sweep; a feature change must retrain it."""
    import json

    from tilecraft.tuner.cost_model import default_model_path, load_default_model
    from tilecraft.tuner.features import FEATURE_NAMES

    monkeypatch.delenv("TILECRAFT_COST_MODEL", raising=False)
    assert json.loads(default_model_path().read_text())["features"] == FEATURE_NAMES, "retrain the default model"
    m = load_default_model()
    assert m is not None and m.trained and m.base is not None and m.n_train >= 600
    sp = space_for("matmul", {"M": 2048, "N": 2048, "K": 2048}, "float16", PRESETS["H200"])
    scores = m.predict("matmul", {"M": 2048, "N": 2048, "K": 2048}, "float16", sp.enumerate()[:50], PRESETS["H200"])
    assert np.isfinite(scores).all() and np.ptp(scores) > 0
    # the tuner's guided search starts from it for GEMM kernels only (it never saw another family)
    from types import SimpleNamespace

    from tilecraft.tuner.tune import shipped_prior

    assert shipped_prior(SimpleNamespace(template="matmul", shapes={"M": 64, "N": 64, "K": 64})).trained
    assert shipped_prior(SimpleNamespace(template="reduction", shapes={"rows": 64, "cols": 64})) is None
