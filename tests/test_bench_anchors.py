"""bench/anchors.py --dry-run: the GPU benchmark's code paths run on the CPU and check correctness."""
import json
import subprocess
import sys


def test_anchors_dry_run(tmp_path):
    out = tmp_path / "anchors.json"
    proc = subprocess.run([sys.executable, "bench/anchors.py", "--dry-run", "--only", "softmax,rmsnorm,linear_gelu",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["workload"] for r in rows] == ["softmax_8192x4096", "rmsnorm_8192x4096", "linear_gelu_8192x4096x4096"]
    assert all(r["correct"] and r["kernels"] == 1 for r in rows)
    assert "workload" in proc.stdout.splitlines()[-4]
