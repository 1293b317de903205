"""bench/tune_gemm.py --dry-run runs on CPU (interpreter correctness, simulated timings) and writes its JSON."""
from ..benches import run_bench


def test_bench_dry_run(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["--dry-run", "--max-configs", "8", "--seeds", "2", "--budget", "6"]
    text, res = run_bench("tune_gemm", argv, out, capsys)
    assert "(b) measurements to reach within 5%" in text and text.rstrip().splitlines()[-1].startswith("total")
    assert len(res["search"]) >= 5 and len(res["cublas"]) == 4
    for r in res["search"]:
        assert r["failed"] == 0 and 1 <= r["guided_n"] <= r["configs"] and 1 <= r["random_n"] <= r["configs"]
        assert r["best_ms"] <= r["default_ms"]
    for r in res["cublas"]:
        assert r["best_ms"] <= r["guided_ms"] and r["cublas_ms"] is None
    assert len(res["codegen"]) == 4 and "(c) tilecraft's codegen matmul kernel" in text
    for r in res["codegen"]:  # the codegen kernel ran (interpreter-checked) on its default + top reference configs
        assert r["failed"] == 0 and r["configs"] >= 2 and r["best_ms"] <= r["default_ms"]
        assert "SPLIT_K" not in r["best_config"] and r["kernel"].endswith("matmul_mm")
    from tilecraft.tuner.cost_model import load_records

    recs = load_records(out)  # every measured config, as cost-model records
    assert len(recs) >= sum(r["configs"] for r in res["search"]) and all(r.template == "matmul" for r in recs)
    assert {tuple(r.shapes[k] for k in "MNK") for r in recs} >= {tuple(r["shape"]) for r in res["search"]}
