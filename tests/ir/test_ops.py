"""Every registered op: shape/dtype inference agrees with torch, and the reference runs, on random inputs."""
import random

import pytest
import torch

from tilecraft.ir import REGISTRY, Graph, TensorType, interpret, verify
from tilecraft.ir.samples import sample

OPS = sorted(REGISTRY)


def _build(name, inputs, attrs):
    g = Graph()
    args = [g.add_input(TensorType.of(x), "x") if isinstance(x, torch.Tensor) else x for x in inputs]
    node = g.add(name, args, attrs)
    g.outputs = list(node.outputs)
    return g, [x for x in inputs if isinstance(x, torch.Tensor)]


@pytest.mark.parametrize("name", OPS)
def test_inference_matches_torch(name):
    r = random.Random(hash(name) & 0xFFFF)
    for trial in range(8):
        inputs, attrs = sample(name, r)
        expected = REGISTRY[name].ref(*inputs, **attrs)
        expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        g, tensors = _build(name, inputs, attrs)
        verify(g)
        for v, e in zip(g.outputs, expected):
            assert v.type.shape == tuple(e.shape), f"{name} trial {trial}: {v.type} vs {tuple(e.shape)}"
            assert v.type.dtype == e.dtype, f"{name} trial {trial}: {v.type.dtype} vs {e.dtype}"
        got = interpret(g, tensors)
        for a, e in zip(got, expected):
            torch.testing.assert_close(a, e, equal_nan=True)


def test_every_op_has_category_and_reference():
    for name, d in REGISTRY.items():
        assert d.category in ("pointwise", "reduction", "matmul", "view", "data", "opaque"), name
        assert callable(d.ref), name
        if d.category == "pointwise":
            assert d.triton is not None, f"pointwise op {name} has no Triton expression"


def test_broadcast_error_names_shapes():
    g = Graph()
    a = g.add_input(TensorType((3, 4), torch.float32), "a")
    b = g.add_input(TensorType((5,), torch.float32), "b")
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5,\).*do not broadcast"):
        g.add("add", [a, b])


def test_matmul_shape_error():
    g = Graph()
    a = g.add_input(TensorType((3, 4), torch.float32), "a")
    b = g.add_input(TensorType((5, 2), torch.float32), "b")
    with pytest.raises(ValueError, match="do not multiply"):
        g.add("mm", [a, b])


def test_promotion_with_scalars_and_zero_dim():
    g = Graph()
    h = g.add_input(TensorType((4,), torch.bfloat16), "h")
    i = g.add_input(TensorType((4,), torch.int64), "i")
    z = g.add_input(TensorType((), torch.float32), "z")
    assert g.add("mul", [h, 2.0]).out.type.dtype == torch.bfloat16  # a Python float does not promote bf16
    assert g.add("mul", [h, z]).out.type.dtype == torch.bfloat16  # neither does a 0-d float32 tensor
    assert g.add("mul", [i, 2.5]).out.type.dtype == torch.float32  # but it does promote ints
    assert g.add("div", [i, i]).out.type.dtype == torch.float32  # true division
    assert g.add("lt", [h, 0]).out.type.dtype == torch.bool


def test_memoized_inference_tells_alike_arguments_apart():
    """OpDef.infer memoizes by argument types and values: arguments equal in Python (True == 1 == 1.0) or of one
    shape but other strides must still give torch's own types, in any order and when asked again."""
    cases = [
        ("add", [torch.zeros(3, dtype=torch.bool), True], {}),
        ("add", [torch.zeros(3, dtype=torch.bool), 1], {}),
        ("add", [torch.zeros(3, dtype=torch.bool), 1.0], {}),
        ("add", [torch.zeros(3, dtype=torch.int32), 1.0], {}),
        ("add", [torch.zeros(3, dtype=torch.int32), 1], {}),
        ("permute", [torch.zeros(2, 3)], {"dims": [1, 0]}),
        ("permute", [torch.zeros(3, 2).t()], {"dims": [1, 0]}),
        ("sum", [torch.zeros(2, 3)], {"dim": [1], "keepdim": True}),
        ("sum", [torch.zeros(2, 3)], {"dim": [1], "keepdim": False}),
    ]
    for _ in range(2):
        for name, inputs, attrs in cases:
            expected = REGISTRY[name].ref(*inputs, **attrs)
            g, _ = _build(name, inputs, attrs)
            got = g.outputs[0].type
            assert (got.shape, got.dtype, got.strides) == (tuple(expected.shape), expected.dtype,
                                                           tuple(expected.stride())), (name, inputs, attrs)
