"""Regression test reduced by tilecraft.fuzz (4 ops, from 11).

Failure when found: nan_inf_mismatch||
  output 3: 112 non-finite elements, eager has 0
"""
import torch
import torch.nn.functional as F

INPUT_TYPES = [
    ((), torch.bfloat16),
    ((), torch.float32),
    ((7, 8, 5, 2), torch.bfloat16),
    ((), torch.bfloat16),
]


class FuzzModel(torch.nn.Module):
    def forward(self, x0, x1, x2, x3):
        v1 = torch.maximum(x2, x0)  # maximum: bfloat16[7,8,5,2]
        v2 = v1.reshape([560])  # view: bfloat16[560]
        v3 = v1[:, :, :1]  # slice: bfloat16[7,8,1,2]{80,10,2,1}
        v4 = torch.abs(v3)  # abs: bfloat16[7,8,1,2]
        return (v4, x1, x3, v2,)


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


def test_fuzz_5b251fcd49():
    import tilecraft
    from tilecraft.testing import assert_close

    torch._dynamo.reset()
    model = FuzzModel().eval()
    inputs = make_inputs(seed=21000189000, scale=1.0, positive=False)
    with torch.no_grad():
        expected = model(*[x.clone() for x in inputs])
        compiled = tilecraft.compile(model)
        got = compiled(*[x.clone() for x in inputs])
    assert_close(got, expected, msg="compiled vs eager")
