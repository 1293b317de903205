"""quant/kernels.py `cutlass_matmul`: the CUTLASS mixed-input path of the quantized prefill (default where it can
run: sm_90, nvcc, the CUTLASS headers). On the CPU it declines, so dequant_matmul keeps its own result."""
import torch

from tilecraft.quant import kernels, quantize_weight


def _problem():
    g = torch.Generator().manual_seed(0)
    qw = quantize_weight(torch.randn(32, 128, generator=g), "int4_weight_only", 64)
    x = torch.randn(4, 128, generator=g).to(torch.bfloat16)
    return qw, x


def test_cutlass_path_declines_what_it_cannot_take(monkeypatch):
    """Off (TILECRAFT_QMATMUL_CUTLASS=0), CPU tensors, a bias: None, nothing repacked, nothing turned off."""
    qw, x = _problem()
    args = ("int4_weight_only", x, qw.qweight, qw.scales, qw.zeros, 64)
    cache = {}
    for mode in ("0", "auto", "c256x2"):
        monkeypatch.setattr(kernels, "CUTLASS", mode)
        assert kernels.cutlass_matmul(*args, None, torch.empty(4, 32, dtype=x.dtype), None, cache) is None
        assert kernels.cutlass_matmul(*args, torch.zeros(32, dtype=x.dtype), torch.empty(4, 32, dtype=x.dtype),
                                      None, cache) is None
    assert not cache and not kernels._CUTLASS_OFF


def test_dequant_matmul_result_is_unchanged_where_the_path_declines():
    """The interpreter's dequantize + matmul, with the plan's cache passed: the reference result."""
    qw, x = _problem()
    cache = {}
    out = kernels.dequant_matmul("int4_weight_only", x, qw.qweight, qw.scales, qw.zeros, 64, cache=cache)
    ref = (x.float() @ qw.dequantize(torch.float32).t()).to(torch.bfloat16)
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    assert not cache


def test_prebuild_command_says_why_it_cannot_build(monkeypatch, capsys):
    """`python -m tilecraft.quant.cutlass`: exit 2 with the reason when the headers (or nvcc) are missing, and for
    a name that is not a variant, before anything compiles."""
    import tilecraft.quant.cutlass as C
    from tilecraft.quant.cutlass.__main__ import main

    monkeypatch.setattr(C, "find_cutlass", lambda: None)
    assert main([]) == 2
    assert "CUTLASS headers not found" in capsys.readouterr().err
    monkeypatch.setattr(C, "find_nvcc", lambda: None)
    assert main(["c128"]) == 2
    assert "nvcc not found" in capsys.readouterr().err
    import tilecraft.quant.cutlass.__main__ as M

    monkeypatch.setattr(M, "_tools", lambda: None)  # (as if nvcc and the headers were here)
    assert main(["nope"]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
