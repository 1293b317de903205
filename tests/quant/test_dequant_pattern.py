"""A dequantize-then-matmul written with plain torch ops becomes one fused quantized linear (fold_dequant_matmul)."""
import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.testing import assert_close, seeded


class W8Linear(nn.Module):
    """The ANCHORS.md weight-only int8 pattern: x @ (wq.to(dtype) * scale).t()."""

    def __init__(self, k, n, scale_shape=None, gen=None):
        super().__init__()
        self.register_buffer("wq", torch.randint(-127, 127, (n, k), dtype=torch.int8, generator=gen))
        self.register_buffer("scale", torch.rand(*(scale_shape or (n, 1)), generator=gen) * 0.01)

    def forward(self, x):
        return x @ (self.wq.to(x.dtype) * self.scale.to(x.dtype)).t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead", [(1,), (5,), (2, 3)])
def test_int8_dequant_matmul_becomes_one_quantized_linear(dtype, lead):
    g = seeded(3)
    model = W8Linear(48, 20, gen=g).to(dtype).eval()
    x = torch.randn(*lead, 48, generator=g).to(dtype)
    tc = tilecraft.compile(model)
    with torch.no_grad():
        got, again = tc(x), tc(torch.randn(*lead, 48, generator=g).to(dtype))
    ops = tc.report.graphs[0].ops
    assert ops.get("wq_linear_int8") == 1 and "mm" not in ops and "mul" not in ops, ops
    assert_close(got, model(x), scale=2.0)  # eager rounds each dequantized weight to dtype; the kernel does not
    assert again.shape == (*lead, 20)


def test_a_per_column_scale_is_not_a_per_channel_quantized_weight():
    g = seeded(4)
    model = W8Linear(48, 20, scale_shape=(1, 48), gen=g).eval()
    x = torch.randn(3, 48, generator=g)
    tc = tilecraft.compile(model)
    with torch.no_grad():
        got = tc(x)
    assert "wq_linear_int8" not in tc.report.graphs[0].ops
    assert_close(got, model(x))
