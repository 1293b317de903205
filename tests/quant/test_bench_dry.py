"""bench/quant_linear.py --dry-run: every row gets a checked tilecraft kernel time and the JSON is written."""
import importlib.util
import json
from pathlib import Path


def test_bench_dry_run(tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "bench" / "quant_linear.py"
    spec = importlib.util.spec_from_file_location("bench_quant_linear", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "q.json"
    assert mod.main(["--dry-run", "--out", str(out), "--sweep", "2"]) == 0
    data = json.loads(out.read_text())
    assert len(data["linear"]) == 6 and {r["scheme"] for r in data["linear"]} == {"int8_weight_only",
                                                                                   "int4_weight_only"}
    for r in data["linear"]:
        assert r["rel_err"] < 1e-4 and r["configs_tried"] >= 1 and r["tilecraft_us"] > 0
    assert len(data["compile"]) == 4 and all(r["rel_err"] < 1e-4 and not r["failed"] for r in data["compile"])
    assert data["peaks"]["bandwidth"] > 0
    assert data["conv"]["tilecraft_rel_err"] < 1e-5 and "batch_norm" not in data["conv"]["tilecraft_ops"]
    assert "convbnrelu" in capsys.readouterr().out.splitlines()[-1]


def test_bench_dry_run_large_m(tmp_path, capsys):
    """--large-m: every large-M candidate config and the former default checked against the reference and timed,
    with cuBLAS and dequantize+cuBLAS rows, the table printed last."""
    path = Path(__file__).resolve().parents[2] / "bench" / "quant_linear.py"
    spec = importlib.util.spec_from_file_location("bench_quant_linear_large_m", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "lm.json"
    assert mod.main(["--dry-run", "--large-m", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["large_m"]
    assert [(r["scheme"], r["M"]) for r in rows] == [("int8_weight_only", 130), ("int4_weight_only", 130)]
    for r in rows:
        assert len(r["configs"]) >= 4 and sum(e["former_default"] for e in r["configs"]) == 1
        for e in r["configs"]:
            assert e["ok"] and e["rel_err"] < 1e-4 and e["us"] > 0, e
        assert sum(e["config"]["TRANS"] for e in r["configs"]) == len(r["configs"]) - 1
        assert r["cublas_us"] > 0 and r["dequant_mm_rel_err"] < 1e-4
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("best int4 128x48: ") and "x cuBLAS" in lines[-1]
    table = [ln for ln in lines if ln.startswith("int") and " T " in ln]  # a table row per TRANS config
    assert len(table) == sum(len(r["configs"]) - 1 for r in rows)
