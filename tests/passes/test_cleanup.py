"""canonicalize: identity casts and views dropped, and an exact round trip through a wider float type."""
import pytest
import torch

from tilecraft.ir import Graph, TensorType
from tilecraft.passes import canonicalize


def _round_trip(dtype, wide):
    """neg(cast(dtype)(permute(view(cast(wide)(x))))): the round trip feeds another op (a graph output itself
    stays as it is: its replacement would alias the graph input)."""
    g = Graph()
    x = g.add_input(TensorType((2, 3, 4), dtype), "x")
    up = g.add("cast", [x], {"dtype": wide}).out
    v = g.add("view", [up], {"size": [6, 4]}).out
    p = g.add("permute", [v], {"dims": [1, 0]}).out
    g.outputs = [g.add("neg", [g.add("cast", [p], {"dtype": dtype}).out]).out]
    return g


@pytest.mark.parametrize("dtype,wide", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                        (torch.float32, torch.float64)])
def test_exact_round_trip_through_a_wider_float_is_dropped(dtype, wide):
    g = canonicalize(_round_trip(dtype, wide))
    assert [n.op for n in g.nodes] == ["view", "permute", "neg"]  # taken of x itself, no cast left
    assert g.nodes[0].inputs[0] is g.inputs[0] and g.outputs[0].type.dtype == dtype
    x = torch.randn(2, 3, 4).to(dtype)
    assert torch.equal(x.view(6, 4).permute(1, 0), x.to(wide).view(6, 4).permute(1, 0).to(dtype))


@pytest.mark.parametrize("dtype,wide", [(torch.bfloat16, torch.float16), (torch.float32, torch.bfloat16)])
def test_lossy_round_trip_is_kept(dtype, wide):
    """bf16 -> fp16 (same width, other range) and fp32 -> bf16 (narrower) change values: both casts stay."""
    g = canonicalize(_round_trip(dtype, wide))
    assert [n.op for n in g.nodes].count("cast") == 2
