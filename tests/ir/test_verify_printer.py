"""The verifier rejects each kind of malformed graph, naming the node; the printer is deterministic."""
import pytest
import torch

from tilecraft.ir import Graph, Node, TensorType, Value, VerifyError, format_graph, verify


def _graph():
    g = Graph()
    x = g.add_input(TensorType((4, 8), torch.float32), "x")
    y = g.add("exp", [x]).out
    z = g.add("sum", [y], {"dim": [1], "keepdim": True}).out
    g.outputs = [g.add("div", [y, z]).out]
    return g


def test_valid_graph_passes():
    verify(_graph())


def test_use_before_definition():
    g = _graph()
    g.nodes[0], g.nodes[1] = g.nodes[1], g.nodes[0]
    with pytest.raises(VerifyError, match=r"sum\(%exp.*uses %exp before it is defined"):
        verify(g)


def test_dangling_input():
    g = _graph()
    ghost = Value("ghost", TensorType((4, 8), torch.float32))
    g.nodes[2].inputs[0] = ghost
    with pytest.raises(VerifyError, match="uses %ghost before it is defined"):
        verify(g)


def test_dangling_output():
    g = _graph()
    g.outputs.append(Value("nowhere", TensorType((1,), torch.float32)))
    with pytest.raises(VerifyError, match="graph output %nowhere is not defined"):
        verify(g)


def test_type_mismatch():
    g = _graph()
    g.nodes[1].outputs[0].type = TensorType((4,), torch.float32)
    with pytest.raises(VerifyError, match=r"output %sum has type float32\[4\], op gives float32\[4,1\]"):
        verify(g)


def test_unknown_op_and_wrong_output_count():
    g = _graph()
    g.nodes[0].op = "frobnicate"
    with pytest.raises(VerifyError, match="unknown op 'frobnicate'"):
        verify(g)
    g = _graph()
    g.nodes[0].outputs.append(Value("extra", TensorType((4, 8), torch.float32), g.nodes[0]))
    with pytest.raises(VerifyError, match="has 1 outputs, node has 2"):
        verify(g)


def test_output_producer_and_duplicate_names():
    g = _graph()
    g.nodes[0].outputs[0].producer = g.nodes[1]
    with pytest.raises(VerifyError, match="does not point back"):
        verify(g)
    g = _graph()
    g.nodes[1].outputs[0].name = "exp"
    with pytest.raises(VerifyError, match="defined twice"):
        verify(g)


def test_error_names_source():
    g = _graph()
    g.nodes[1].source = "aten.sum.dim_IntList at model.py:3 `y.sum(1)`"
    g.nodes[1].outputs[0].type = TensorType((2,), torch.float32)
    with pytest.raises(VerifyError, match=r"from aten.sum.dim_IntList at model.py:3"):
        verify(g)


def test_printer_is_deterministic_and_readable():
    a, b = format_graph(_graph()), format_graph(_graph())
    assert a == b
    assert a.splitlines() == [
        "graph(%x: float32[4,8]) {",
        "  %exp: float32[4,8] = exp(%x)",
        "  %sum: float32[4,1] = sum(%exp, dim=[1], keepdim=True)",
        "  %div: float32[4,8] = div(%exp, %sum)",
        "  return %div",
        "}",
    ]


def test_printer_shows_strides_of_views():
    g = Graph()
    x = g.add_input(TensorType((4, 8), torch.float32), "x")
    g.outputs = [g.add("permute", [x], {"dims": [1, 0]}).out]
    assert "float32[8,4]{1,8} = permute(%x, dims=[1, 0])" in format_graph(g)
