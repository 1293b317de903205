"""bench/fuzz_planted.py --dry-run: the planted-bug suite's script finds a fault on the CPU interpreter."""
import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_planted_script_reports_time_to_find(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fuzz_planted", os.path.join(ROOT, "bench", "fuzz_planted.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--dry-run", "--faults", "wrong_sub", "--out", str(tmp_path)]) == 0
    rows = json.load(open(tmp_path / "planted.json"))["rows"]
    assert rows[0]["found"] and rows[0]["time_to_find_s"] > 0 and rows[0]["reduced_nodes"] <= 5
    assert "| wrong_sub | True |" in capsys.readouterr().out
