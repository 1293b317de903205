"""Graph helpers every layer uses: views as index arithmetic, rebuilding a graph, evaluating every value."""
import torch

from tilecraft.ir import Graph, TensorType, base_value, copy_graph, evaluate, interpret, is_view, next_pow2, verify


def test_views_lead_back_to_their_base_but_as_strided_does_not():
    g = Graph()
    x = g.add_input(TensorType((4, 6), torch.float32), "x")
    p = g.add("permute", [x], {"dims": [1, 0]})
    u = g.add("unsqueeze", [p.out], {"dim": 0})
    s = g.add("as_strided", [x], {"size": [3, 2], "stride": [6, 2], "storage_offset": 1})
    e = g.add("exp", [u.out])
    assert is_view(p) and is_view(u) and not is_view(s) and not is_view(e) and not is_view(None)
    assert base_value(u.out) is x and base_value(s.out) is s.out and base_value(e.out) is e.out


def test_evaluate_gives_every_value_and_interpret_the_outputs():
    g = Graph()
    x = g.add_input(TensorType((3, 4), torch.float32), "x")
    a = g.add("exp", [x]).out
    b = g.add("sum", [a], {"dim": [1]}).out
    g.outputs = [b]
    t = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    env = evaluate(g, [t])
    torch.testing.assert_close(env[id(a)], t.exp())
    torch.testing.assert_close(env[id(b)], t.exp().sum(1))
    torch.testing.assert_close(interpret(g, [t])[0], t.exp().sum(1))


def test_next_pow2():
    assert [next_pow2(n) for n in (1, 2, 3, 4, 5, 1000, 1024, 1025)] == [1, 2, 4, 4, 8, 1024, 1024, 2048]


def test_copy_graph_drops_and_bypasses():
    g = Graph()
    x = g.add_input(TensorType((3, 4), torch.float32), "x")
    a = g.add("exp", [x]).out
    b = g.add("relu", [a]).out
    c = g.add("sum", [b], {"dim": [1]}).out
    g.outputs = [c]
    bypassed = copy_graph(g, bypass={id(b): a})
    verify(bypassed)
    assert [n.op for n in bypassed.nodes] == ["exp", "sum"]
    fresh = copy_graph(g, fresh={id(b)})
    assert [n.op for n in fresh.nodes] == ["sum"] and fresh.inputs[0].type.shape == (3, 4)
    t = torch.randn(3, 4)
    torch.testing.assert_close(interpret(fresh, [t])[0], t.sum(1))
    assert copy_graph(g, retype=lambda t: TensorType((3, 5), t.dtype)) is not None
    bad = copy_graph(g, reattr=lambda n, a: {**a, "dim": [7]} if n.op == "sum" else a)  # invalid: rejected
    assert bad is None
    same = copy_graph(g)
    assert [(n.op, n.attrs, n.out.type) for n in same.nodes] == [(n.op, n.attrs, n.out.type) for n in g.nodes]
