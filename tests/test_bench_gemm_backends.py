"""bench/gemm_backends.py --dry-run: the GPU benchmark's code paths run on the CPU, every backend checked."""
import json
import subprocess
import sys


def test_gemm_backends_dry_run(tmp_path):
    out = tmp_path / "gemm_backends.json"
    proc = subprocess.run([sys.executable, "bench/gemm_backends.py", "--dry-run", "--only", "fc1_gelu,gate_up,bmm",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert {r["case"] for r in rows} == {"gpt2_bert_fc1_gelu", "llama_gate_up", "attn_scores_bmm"}
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]  # all checked against torch
    for case in ("gpt2_bert_fc1_gelu", "llama_gate_up"):
        backends = {r["backend"] for r in rows if r["case"] == case}
        assert backends == {"cublas", "cublas+epi", "cublas+eager", "aten", "grouped", "hopper"}, backends
    persistent = [r for r in rows if r["backend"] == "hopper"]
    assert persistent and all(r["config"]["PERSISTENT"] == 1 and r["config"]["TMA"] == 1 for r in persistent)
    assert set(doc["summary"]) == {r["case"] for r in rows} and doc["summary"]["llama_gate_up"]["hopper"]["ms"] > 0
    assert "best per case" in proc.stdout
