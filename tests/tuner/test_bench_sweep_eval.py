"""bench/gemm_sweep.py (dry run: interpreter-checked configs) and bench/eval_cost_model.py (real XGBoost) on a
small synthetic sweep: leave-one-shape-out metrics, search replays, rule check, and the retrained default model."""
import json
import random

import torch

from tilecraft.tuner.cost_model import Record, XGBoostCostModel, load_default_model, load_records
from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.measure import roofline_gemm_ms
from tilecraft.tuner.reference_kernels import ReferenceGemm
from tilecraft.tuner.spaces import space_for

from ..benches import load_bench

H100 = PRESETS["H100"]


def test_gemm_sweep_dry_run_writes_checked_records(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert load_bench("gemm_sweep").main(["--dry-run", "--configs", "3", "--rejected", "1", "--workers", "2",
                                      "--matmul", "aten", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # the compile pool rebuilt each codegen kernel in its workers with the same key (same Triton cache entries)
    assert "compiled 15 configs in 2 processes" in text, text
    doc = json.loads(out.read_text())
    assert [s["torch_check"] for s in doc["shapes"]] == ["ok"] * 3 and doc["stopped"] == "done"
    recs = load_records(out)
    assert len(recs) == len(doc["records"]) >= 3 * 4
    assert all(r.status == "ok" for r in recs), [r for r in doc["records"] if r["status"] != "ok"]
    # compile's default for these kernels is ATen (as on a GPU): the sweep times the generated kernel's configs
    # and ATen's once, as the baseline
    assert all(r.config["BACKEND"] == "triton" for r in recs) and all(s["aten_ms"] for s in doc["shapes"])
    for s in doc["shapes"]:  # the default config first, then valid configs and one rule-rejected one
        mine = [r for r in doc["records"] if r["kernel_key"] == s["key"]]
        assert mine[0]["config"] == s["default"] and sum(r["rule"] is not None for r in mine[1:]) == 1
    assert "15 records in" in text


def _synthetic_sweep(path):
    """Roofline timings of 6 shapes: the default, 40 valid configs, and 4 the rules remove (recorded as failed
    when they pass the smem limit, as on hardware)."""
    rng, records = random.Random(0), []
    for M, N, K in [(4096, 4096, 4096), (1024, 1024, 1024), (128, 4096, 11008), (512, 512, 8192),
                    (2048, 5632, 2048), (3000, 1000, 700)]:
        k = ReferenceGemm(M, N, K, torch.float16)
        sp = space_for("matmul", k.shapes, k.dtype, H100)
        configs = [(k.default_config(), sp.why_invalid(k.default_config()))]
        configs += [(c, None) for c in rng.sample(sp.enumerate(), 40) if c != k.default_config()]
        while sum(r is not None for _, r in configs[1:]) < 4:
            c = {kk: rng.choice(v) for kk, v in sp.knobs.items()}
            if sp.rule(c):
                configs.append((c, sp.rule(c)))
        for c, rule in configs:
            try:
                t, status = roofline_gemm_ms(k.shapes, c, H100), "ok"
            except RuntimeError:
                t, status = None, "failed"
            records.append({**Record("matmul", dict(k.shapes), "float16", c, H100.to_dict(), t, status,
                                     k.key).to_json(), "rule": rule})
    path.write_text(json.dumps({"device": H100.to_dict(), "records": records}))


def test_eval_cost_model_on_a_synthetic_sweep_and_the_default_model(tmp_path, capsys, monkeypatch):
    sweep, model_path, out = tmp_path / "sweep.json", tmp_path / "model.json", tmp_path / "eval.json"
    _synthetic_sweep(sweep)
    assert load_bench("eval_cost_model").main([str(sweep), "--seeds", "1", "--save-default", "--save", str(model_path),
                                           "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    s = res["summary"]
    print(capsys.readouterr().out)
    assert s["shapes"] == 6 and len(res["rows"]) == 6
    assert s["pairwise"] > 0.75 and s["top5_geomean"] < 1.3, s  # roofline surfaces are learnable across shapes
    assert s["transfer"] < s["random"] / 2, s  # transfer search needs far fewer measurements than random
    for r in res["rows"]:
        assert 1.0 <= r["top5"] <= r["top1"] and 0 <= r["pairwise"] <= 1
        assert r["removed_best_over_kept_best"] is None or r["removed_best_over_kept_best"] > 0
    # the retrained model is where the tuner looks (TILECRAFT_COST_MODEL), loads as a prior, and ranks
    monkeypatch.setenv("TILECRAFT_COST_MODEL", str(model_path))
    m = load_default_model()
    assert m is not None and m.trained and m.base is not None and m.n_train == 6 * 41
    sp = space_for("matmul", {"M": 2048, "N": 2048, "K": 2048}, torch.float16, H100)
    cands = sp.enumerate()[:200]
    scores = m.predict("matmul", {"M": 2048, "N": 2048, "K": 2048}, "float16", cands, H100)
    times = [roofline_gemm_ms({"M": 2048, "N": 2048, "K": 2048}, c, H100) for c in cands]
    best_pick = min(range(len(cands)), key=lambda i: -scores[i])
    assert times[best_pick] <= 1.5 * min(times)
    before = m.booster.num_boosted_rounds()
    m.fit([Record("matmul", {"M": 64, "N": 64, "K": 64}, "float16", c, "H100", t)
           for c, t in zip(cands[:20], times[:20])])
    assert m.booster.num_boosted_rounds() > before  # fitting adds trees on top of the loaded model
    assert XGBoostCostModel.load(model_path).booster.num_boosted_rounds() == before
