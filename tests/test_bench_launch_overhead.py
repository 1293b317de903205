"""bench/launch_overhead.py --dry-run: both paths run the same program with equal outputs (the bench checks it),
the JSON holds a row per path, and the table comes last."""
import json
import subprocess
import sys


def test_launch_overhead_dry_run(tmp_path):
    out = tmp_path / "launch.json"
    proc = subprocess.run([sys.executable, "bench/launch_overhead.py", "--dry-run", "--models", "tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["path"]) for r in rows] == [("tiny", "steps"), ("tiny", "lean")]
    assert all(r["kernels"] > 10 and r["steps"] >= r["kernels"] and r["us_per_launch"] > 0 for r in rows)
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-4].startswith("model") and lines[-1].startswith("tiny: lean/steps per launch")
