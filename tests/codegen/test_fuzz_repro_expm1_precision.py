"""Regression test reduced by tilecraft.fuzz (2 ops, from 12).

Failure when found: wrong_result||
  output 0: 1/84 elements off, max abs error 0.00264 (e.g. 209.99 vs eager 209.993)
"""
import torch
import torch.nn.functional as F

INPUT_TYPES = [
    ((2, 3, 7, 2), torch.float32),
    ((2, 3, 7, 2), torch.float32),
]


class FuzzModel(torch.nn.Module):
    def forward(self, x0, x1):
        v1 = torch.expm1(x0)  # expm1: float32[2,3,7,2]
        v2 = torch.div(x1, v1)  # div: float32[2,3,7,2]
        return (v2,)


def make_inputs(seed=0, scale=1.0, positive=False):
    """Seeded inputs: normal(0, scale), or |normal| * scale + 0.1 when positive; drawn in float64, then cast."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype in INPUT_TYPES:
        t = torch.randn(shape, generator=g, dtype=torch.float64) * scale
        if positive:
            t = t.abs() + 0.1
        out.append(t.to(dtype))
    return out


def test_fuzz_f7891eb232():
    import tilecraft
    from tilecraft.testing import assert_close

    torch._dynamo.reset()
    model = FuzzModel().eval()
    inputs = make_inputs(seed=58000043000, scale=1.0, positive=False)
    with torch.no_grad():
        expected = model(*[x.clone() for x in inputs])
        compiled = tilecraft.compile(model)
        got = compiled(*[x.clone() for x in inputs])
    assert_close(got, expected, msg="compiled vs eager")
