"""bench/tune_model.py --dry-run: tunes every kernel of a tiny transformer block on CPU (interpreter-checked
candidates, simulated times), recompiles with the DB (every config from it, still correct) and writes its JSON."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_tune_model_dry_run(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_tune_model", ROOT / "bench" / "tune_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    assert mod.main(["--dry-run", "--no-progress", "--budget", "3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "whole block" in text and "tilecraft tuned" in text and "Inductor max-autotune" in text
    assert text.rstrip().splitlines()[-1].startswith("total")
    res = json.loads(out.read_text())
    m = res["model"]
    assert m["tilecraft_default"]["correct"] and m["tilecraft_tuned"]["correct"]
    n = m["tilecraft_default"]["kernels"]
    # kernels with one source (identical layers, or the block's two LayerNorms) share a key and are tuned once
    assert n >= 8 and n - 2 <= len(res["kernels"]) <= n == m["tilecraft_tuned"]["kernels"]
    assert len({k["key"] for k in res["kernels"]}) == len(res["kernels"]) if "key" in res["kernels"][0] else True
    assert m["tilecraft_tuned"]["configs_from_db"] == n  # every kernel launched with its tuned config
    assert {k["template"] for k in res["kernels"]} >= {"matmul", "reduction"}
    for k in res["kernels"]:
        assert 1 <= k["measurements"] <= 3 and k["tuned_ms"] <= k["default_ms"]
        assert k["best_config"] is not None and "SPLIT_K" not in k["best_config"]
    assert res["tuning"]["measurements"] == sum(k["measurements"] for k in res["kernels"])
    assert not res["tuning"]["interrupted"]
