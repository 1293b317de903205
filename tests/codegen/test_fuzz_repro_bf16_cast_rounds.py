"""Regression test reduced by tilecraft.fuzz (3 ops, from 14).

Failure when found: wrong_result||
  output 0: 1/1 elements off, max abs error 0.00155 (e.g. 0.935947 vs eager 0.9375)
"""
import torch
import torch.nn.functional as F

INPUT_TYPES = [
    ((1,), torch.float32),
]


class FuzzModel(torch.nn.Module):
    def forward(self, x0):
        v1 = x0.to(torch.bfloat16)  # cast: bfloat16[1]
        v2 = torch.sin(v1)  # sin: bfloat16[1]
        v3 = v2.to(torch.float32)  # cast: float32[1]
        return (v3,)


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


def test_fuzz_563bc8f763():
    import tilecraft
    from tilecraft.testing import assert_close

    torch._dynamo.reset()
    model = FuzzModel().eval()
    inputs = make_inputs(seed=33000207000, scale=1.0, positive=False)
    with torch.no_grad():
        expected = model(*[x.clone() for x in inputs])
        compiled = tilecraft.compile(model)
        got = compiled(*[x.clone() for x in inputs])
    assert_close(got, expected, msg="compiled vs eager")
