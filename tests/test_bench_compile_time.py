"""bench/compile_time.py --dry-run: each measurement in its own process with fresh cache directories, checked
against eager; the table comes last and the JSON holds every row."""
import json
import subprocess
import sys


def test_compile_time_dry_run(tmp_path):
    out = tmp_path / "compile_time.json"
    proc = subprocess.run([sys.executable, "bench/compile_time.py", "--dry-run", "--models", "gpt2", "--caches", "cold",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["backend"], r["cache"]) for r in rows] == [("gpt2", "tilecraft", "cold"),
                                                                     ("gpt2", "inductor", "cold")]
    assert all(r["correct"] and r["compile_s"] > 0 for r in rows)
    tc = rows[0]
    assert tc["kernels"] > tc["distinct_sources"] > 0 and tc["fallbacks"] == 0  # the two layers share sources
    assert tc["compile_jobs"] == 0  # nothing to compile on the interpreter
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-4].startswith("model") and lines[-3].startswith("gpt2    tilecraft")
