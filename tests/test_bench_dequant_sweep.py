"""bench/dequant_sweep.py --dry-run: the prefill dequantize sweep's code path on the CPU (interpreter), int8 and
int4, every tile's output checked against the dequantized reference before it would be timed; bench/sdpa_small_t.py
says it needs a GPU."""
import pytest
import torch

from tests.benches import load_bench, run_bench


def test_dequant_sweep_dry_run(tmp_path, capsys):
    out, data = run_bench("dequant_sweep", ["--dry-run"], tmp_path / "deq.json", capsys)
    assert data["dry_run"] and [(r["scheme"], r["N"], r["K"]) for r in data["rows"]] == [
        ("int8_weight_only", 48, 64), ("int4_weight_only", 48, 64)]
    for r in data["rows"]:
        assert r["default"] is not None and len(r["top"]) == 2  # both tiles ran and matched the reference
    assert "WRONG" not in out and "dequantize pass, cold" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="it runs on a GPU")
def test_sdpa_small_t_needs_a_gpu(tmp_path, capsys):
    assert load_bench("sdpa_small_t").main(["--out", str(tmp_path / "s.json")]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
