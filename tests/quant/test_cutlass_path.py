"""quant/kernels.py `cutlass_matmul`: the opt-in CUTLASS mixed-input path of the quantized prefill."""
import torch


def test_dequant_matmul_takes_the_cutlass_path_only_on_cuda_when_asked(monkeypatch):
    """kernels.cutlass_matmul: off by default; asked for (TILECRAFT_QMATMUL_CUTLASS) it still declines CPU
    tensors, a bias, and shapes its tiles cannot take, so dequant_matmul computes the same result as before."""
    from tilecraft.quant import kernels, quantize_weight

    g = torch.Generator().manual_seed(0)
    qw = quantize_weight(torch.randn(32, 128, generator=g), "int4_weight_only", 64)
    x = torch.randn(4, 128, generator=g).to(torch.bfloat16)
    args = ("int4_weight_only", x, qw.qweight, qw.scales, qw.zeros, 64)
    assert kernels.cutlass_matmul(*args, None, torch.empty(4, 32, dtype=x.dtype), None) is None  # off
    monkeypatch.setattr(kernels, "CUTLASS", "1")
    assert kernels.cutlass_matmul(*args, None, torch.empty(4, 32, dtype=x.dtype), None) is None  # CPU tensors
    assert not kernels._CUTLASS_OFF and not kernels._PACKED  # nothing tried, nothing turned off
