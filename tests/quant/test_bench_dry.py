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
