"""The generator: valid models for thousands of seeds, deterministic, and emitted programs that reproduce."""
import time
from collections import Counter

import torch

from tilecraft.fuzz.emit import load_file, load_model
from tilecraft.fuzz.generator import generate
from tilecraft.fuzz.inputs import evaluate, input_types, make_inputs
from tilecraft.ir import format_graph, interpret, verify


def test_two_thousand_seeds_are_valid_and_run():
    t0 = time.perf_counter()
    ops = Counter()
    for seed in range(2000):
        m = generate(seed)
        verify(m.graph)
        assert m.graph.nodes and m.graph.outputs, f"seed {seed}: empty model"
        env = evaluate(m.graph, make_inputs(input_types(m.graph), seed))  # runs every node in eager torch
        for v in m.graph.values():  # the inferred types are the types torch produces
            t = env[id(v)]
            assert tuple(t.shape) == v.type.shape and t.dtype == v.type.dtype, f"seed {seed}: %{v.name}"
        ops.update(n.op for n in m.graph.nodes)
    assert time.perf_counter() - t0 < 60
    # biased toward what the passes rewrite: matmuls, norms, softmax, reductions, views, casts all show up
    for op in ("mm", "addmm", "bmm", "permute", "softmax", "log_softmax", "layer_norm", "rsqrt", "amax", "sum",
               "mean", "var", "view", "slice", "select", "expand", "cat", "cast", "where", "exp", "gelu"):
        assert ops[op] > 0, f"op {op} never generated"


def test_generation_is_deterministic_per_seed():
    for seed in (0, 1, 17, 12345):
        a, b = generate(seed), generate(seed)
        assert format_graph(a.graph) == format_graph(b.graph)
        assert a.source() == b.source()
    assert format_graph(generate(1).graph) != format_graph(generate(2).graph)


def test_emitted_source_reproduces_the_graph():
    for seed in range(60):
        m = generate(seed)
        model, mod = load_model(m.source())
        inputs = mod.make_inputs(seed)
        for x, y in zip(inputs, make_inputs(input_types(m.graph), seed)):
            assert torch.equal(x, y)  # the program's recipe is the fuzzer's recipe
        expected = interpret(m.graph, inputs)
        got = model(*inputs)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape and g.dtype == e.dtype
            torch.testing.assert_close(g, e, rtol=0, atol=0, equal_nan=True)


def test_program_loads_from_a_file(tmp_path):
    m = generate(3)
    path = tmp_path / "model.py"
    path.write_text(m.source())
    mod = load_file(str(path))
    out = mod.FuzzModel()(*mod.make_inputs(0))
    expected = interpret(m.graph, mod.make_inputs(0))
    torch.testing.assert_close(list(out), expected, equal_nan=True)
