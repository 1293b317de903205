"""bench/tune_model.py --dry-run: tunes every kernel of a tiny transformer block on CPU (interpreter-checked
candidates, simulated times), recompiles with the DB (every config from it, still correct) and writes its JSON."""
from ..benches import run_bench


def test_bench_tune_model_dry_run(tmp_path, capsys):
    text, res = run_bench("tune_model", ["--dry-run", "--no-progress", "--budget", "3"], tmp_path / "r.json", capsys)
    assert "whole block" in text and "tilecraft tuned" in text and "Inductor max-autotune" in text
    assert text.rstrip().splitlines()[-1].startswith("total")
    m = res["model"]
    assert m["tilecraft_default"]["correct"] and m["tilecraft_tuned"]["correct"]
    n = m["tilecraft_default"]["kernels"]
    assert n >= 8 and n == m["tilecraft_tuned"]["kernels"]
    # kernels with the same source, shapes and dtype (e.g. two LayerNorms) are one tuning problem, tuned once
    distinct = {(k["key"], k["shapes"], k["dtype"]) for k in res["kernels"]}
    assert len(distinct) == len(res["kernels"]) and n - 2 <= len(res["kernels"]) <= n
    assert m["tilecraft_tuned"]["configs_from_db"] == n  # every kernel launched with its tuned config
    assert {k["template"] for k in res["kernels"]} >= {"matmul", "reduction"}
    for k in res["kernels"]:
        assert 1 <= k["measurements"] <= 3 and k["tuned_ms"] <= k["default_ms"]
        assert k["best_config"] is not None and "SPLIT_K" not in k["best_config"]
    assert res["tuning"]["measurements"] == sum(k["measurements"] for k in res["kernels"])
    assert not res["tuning"]["interrupted"]
