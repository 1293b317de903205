"""bench/rope_layout.py --dry-run: tiny NeoX and LLaMA on the CPU; their RoPE kernels' layouts let the attention
output reach the output projection as a view (no copy), no runtime layout copy, outputs match eager."""
from tests.benches import load_bench


def test_dry_run_neox_and_llama(capsys):
    assert load_bench("rope_layout").main(["--dry-run", "--models", "neox,llama_b4"]) == 0
    out = capsys.readouterr().out
    assert out.count("read by matmuls as a view: True") == 4 and "as a view: False" not in out, out
    assert "mul_neg_cat_add" in out and out.count("runtime layout copies: none") == 2, out
