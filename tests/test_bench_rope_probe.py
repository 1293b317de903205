"""bench/rope_probe.py --dry-run: the tiny LLaMA with int4 on the CPU under each variant (no timing): with RoPE in
the GEMM (on, map, late) every layer's q/k/v GEMM carries it and the RoPE kernels are gone; off keeps them."""
from tests.benches import run_bench


def test_rope_probe_dry_run_variants(tmp_path, capsys):
    _, data = run_bench("rope_probe", ["--dry-run", "--variants", "off,on"], tmp_path / "r.json", capsys)
    off, on = data
    assert off["rope_gemms"] == 0 and on["rope_gemms"] == 2  # (the dry-run model has 2 layers)
    assert on["kernels"] == off["kernels"] - 2  # one RoPE launch a layer gone
