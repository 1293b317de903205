"""bench/step_kernels.py --dry-run: the tiny LLaMA compiled with int4 on the CPU; the program's kernels listed
(on the GPU each gets its profiled µs in launch order)."""
from tests.benches import run_bench


def test_step_kernels_dry_run_lists_the_program(tmp_path, capsys):
    out, data = run_bench("step_kernels", ["--dry-run", "--quant", "int4"], tmp_path / "s.json", capsys)
    assert data["quant"] == "int4" and data["rows"] == []  # (no profile without a GPU)
    kernels = data["kernels"]
    assert any("sumsq_tiles" in k for k in kernels) and any("sigmoid_mul" in k for k in kernels)
    assert all(k in out for k in kernels)
