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
    assert all(r["correct"] and r["compile_s"] > 0 and r["rel_err"] < 1e-3 for r in rows)
    tc = rows[0]
    assert tc["kernels"] > tc["distinct_sources"] > 0 and tc["fallbacks"] == 0  # the two layers share sources
    assert tc["compile_jobs"] == 0  # nothing to compile on the interpreter
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-4].startswith("model") and lines[-3].startswith("gpt2    tilecraft")


def test_compile_phases_dry_run():
    """bench/compile_phases.py --dry-run: both compiles match eager; the phases are named and add up to the total."""
    proc = subprocess.run([sys.executable, "bench/compile_phases.py", "--model", "gpt2", "--dry-run"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-1].startswith("kernels ") and lines[-1].endswith("matches eager: yes"), lines[-1]
    rows = {ln[:32].strip(): [float(x) for x in ln[32:].split()[:2]] for ln in lines[lines.index(
        next(ln for ln in lines if ln.startswith("phase"))) + 1:-1]}
    total = rows.pop("TOTAL (compile + first call)")
    for run in (0, 1):
        assert abs(sum(r[run] for r in rows.values()) - total[run]) < 1e-2
    assert {"verify", "IR import", "codegen", "pass cse", "AOT autograd (trace, decompose)"} <= set(rows)
