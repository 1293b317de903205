"""Input search: finite intermediates, step functions away from their steps, and a clear give-up."""
import pytest
import torch

from tilecraft.fuzz.inputs import InputSearchFailed, evaluate, find_inputs, problems
from tilecraft.ir import Graph, TensorType


def _graph(build, shape=(4, 5), dtype=torch.float32):
    g = Graph()
    x = g.add_input(TensorType(shape, dtype), "x")
    g.outputs = [build(g, x)]
    return g


def test_finds_inputs_for_log_of_raw_input():
    g = _graph(lambda g, x: g.add("log", [x]).out)
    found = find_inputs(g, seed=3)
    assert found.positive and found.tries > 1  # normal inputs give NaN; positive ones do not
    env = evaluate(g, found.tensors)
    assert all(torch.isfinite(t).all() for t in env.values())


def test_shrinks_range_when_exp_overflows_in_half():
    g = _graph(lambda g, x: g.add("exp", [g.add("mul", [x, 6.0]).out]).out, shape=(64,), dtype=torch.float16)
    found = find_inputs(g, seed=0)
    assert found.scale < 1.0
    assert torch.isfinite(evaluate(g, found.tensors)[id(g.outputs[0])]).all()


def test_gives_up_naming_the_node():
    g = _graph(lambda g, x: g.add("log", [g.add("neg", [g.add("add", [g.add("abs", [x]).out, 1.0]).out]).out]).out)
    with pytest.raises(InputSearchFailed, match=r"gave up after \d+ tries: log -> %\w+ is not finite"):
        find_inputs(g, seed=0)


def test_comparisons_kept_away_from_threshold():
    g = _graph(lambda g, x: g.add("where", [g.add("gt", [x, 0.0]).out, x, 1.0]).out)
    close = [torch.tensor([[1e-6, 1.0, -1.0, 2.0, 3.0]] * 4)]
    assert any("within" in p for p in problems(g, close))
    found = find_inputs(g, seed=1)
    assert found.tensors[0].abs().min() >= 1e-4
