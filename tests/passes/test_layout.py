"""sink_views: a pointwise op on a leading-dims reshape of a computed value moves below the reshape; the
channels-last decision."""
import torch

from tilecraft.ir import Graph, TensorType, interpret, verify
from tilecraft.passes import dce, sink_views
from tilecraft.passes.layout import wants_channels_last
from tilecraft.testing import assert_close, seeded


def _linear3d_graph():
    g = Graph()
    x = g.add_input(TensorType((6, 8), torch.float32), "x")
    w = g.add_input(TensorType((8, 5), torch.float32), "w")
    bias = g.add_input(TensorType((5,), torch.float32), "bias")
    res = g.add_input(TensorType((2, 3, 5), torch.float32), "res")
    mm = g.add("mm", [x, w]).out
    v = g.add("view", [mm], {"size": [2, 3, 5]}).out
    a = g.add("add", [v, bias]).out  # trailing broadcast: stays as is
    gl = g.add("gelu", [a]).out
    g.outputs = [g.add("add", [gl, res]).out]  # same-shape operand: gets viewed to [6, 5]
    return g


def test_pointwise_ops_move_below_the_reshape_and_results_agree():
    gen = seeded(0)
    inputs = [torch.randn(6, 8, generator=gen), torch.randn(8, 5, generator=gen), torch.randn(5, generator=gen),
              torch.randn(2, 3, 5, generator=gen)]
    expected = interpret(_linear3d_graph(), inputs)
    g = dce(sink_views(_linear3d_graph()))
    verify(g)
    assert_close(interpret(g, inputs), expected)
    ops = [n.op for n in g.nodes]
    assert ops.index("gelu") < max(i for i, o in enumerate(ops) if o == "view" and g.nodes[i].out.type.shape == (2, 3, 5))
    for n in g.nodes:
        if n.op in ("add", "gelu"):
            assert n.out.type.shape == (6, 5), f"{n.op} still runs on the 3-D shape"


def test_broadcast_that_depends_on_leading_dims_blocks_the_move():
    g = Graph()
    x = g.add_input(TensorType((6, 5), torch.float32), "x")
    s = g.add_input(TensorType((2, 1, 5), torch.float32), "s")  # varies along the leading dim: cannot stay
    r = g.add("relu", [x]).out
    v = g.add("view", [r], {"size": [2, 3, 5]}).out
    g.outputs = [g.add("mul", [v, s]).out]
    before = [n.op for n in g.nodes]
    after = [n.op for n in sink_views(g).nodes]
    assert before == after


def _upcast_graph(then_gelu: bool):
    """bf16 x @ w + residual viewed to 3-D, cast to fp32 (RMSNorm's upcast), then its mean square, or gelu."""
    g = Graph()
    x = g.add_input(TensorType((6, 8), torch.bfloat16), "x")
    w = g.add_input(TensorType((8, 5), torch.bfloat16), "w")
    res = g.add_input(TensorType((2, 3, 5), torch.bfloat16), "res")
    v = g.add("view", [g.add("mm", [x, w]).out], {"size": [2, 3, 5]}).out
    h = g.add("add", [v, res]).out
    up = g.add("cast", [h], {"dtype": torch.float32}).out
    if then_gelu:
        g.outputs = [h, g.add("gelu", [up]).out]
    else:  # the square feeds only a reduction: it stays where it is
        sq = g.add("pow_scalar", [up], {"exponent": 2}).out
        g.outputs = [h, g.add("mean", [sq], {"dim": [2], "keepdim": True}).out]
    return g


def test_a_widening_cast_no_moved_op_reads_stays_on_the_view():
    """The add moves below the view (it joins the matmul epilogue); the fp32 upcast goes back on the 3-D view,
    where the consumer casts as it loads, unless a moved op (gelu here) reads it."""
    gen = seeded(2)
    inputs = [torch.randn(6, 8, generator=gen).bfloat16(), torch.randn(8, 5, generator=gen).bfloat16(),
              torch.randn(2, 3, 5, generator=gen).bfloat16()]
    for then_gelu in (False, True):
        expected = interpret(_upcast_graph(then_gelu), inputs)
        g = dce(sink_views(_upcast_graph(then_gelu)))
        verify(g)
        assert_close(interpret(g, inputs), expected)
        shape = {n.op: n.out.type.shape for n in g.nodes}
        assert shape["add"] == (6, 5)
        assert shape["cast"] == ((6, 5) if then_gelu else (2, 3, 5)), then_gelu


# --------------------------------------------------------------------- end to end: no copy kernels
import tilecraft  # noqa: E402
from tilecraft.models import ConvBNReLU  # noqa: E402


def _kernels(fn, *inputs):
    c = tilecraft.compile(fn)
    with torch.no_grad():
        assert_close(c(*inputs), fn(*inputs))
    return [k for g in c.report.graphs for k in g.kernels]


def _copies(kernels):
    return [k.name for k in kernels if k.info["ops"] in (["copy"], ["cast"])]


def test_permute_matmul_transpose_pointwise_have_no_copy_kernel():
    gen = seeded(1)
    a, b = torch.randn(12, 7, generator=gen), torch.randn(12, 5, generator=gen)
    ks = _kernels(lambda a, b: a.permute(1, 0) @ b, a, b)
    assert [k.template for k in ks] == ["matmul"]
    ks = _kernels(lambda x: torch.sigmoid(x.transpose(0, 1)) * 2, a)
    assert [k.template for k in ks] == ["pointwise"] and not _copies(ks)


def test_channels_last_conv_net_has_no_copy_kernel():
    m = ConvBNReLU().eval()
    x = torch.randn(2, 3, 10, 10, generator=seeded(2)).to(memory_format=torch.channels_last)
    ks = _kernels(m, x)
    assert ks and not _copies(ks)


class _TwoConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.c2, self.b2 = torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + y)


def test_channels_last_decision_converts_once_and_returns_eager_layout():
    m = _TwoConv().eval()
    for b in (m.b1, m.b2):
        b.running_mean.uniform_(-0.5, 0.5)
        b.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 9, 9, generator=seeded(3))
    c = tilecraft.compile(m, channels_last=True)
    with torch.no_grad():
        got, expected = c(x), m(x)
    assert_close(got, expected)
    assert got.is_contiguous()  # the user's layout, as eager gives it
    g = c.report.graphs[0].graph
    convs = [n for n in g.nodes if n.op == "convolution"]
    assert all(_cl(n.inputs[0].type) and _cl(n.out.type) for n in convs)
    # one copy of the activation (at the net's input) plus the weights; the relu between the convs writes NHWC
    copies = [n for n in g.nodes if n.op == "channels_last"]
    assert len(copies) == 1 and copies[0].inputs[0].producer is None  # only the user's input is copied
    assert copies[0].inputs[0].type.shape == (2, 3, 9, 9)
    auto = tilecraft.compile(m)  # the default decision: not on the CPU
    with torch.no_grad():
        assert_close(auto(x), expected)
    assert not any(n.op == "channels_last" for n in auto.report.graphs[0].graph.nodes)


def _cl(t):
    from tilecraft.passes.layout import _is_cl

    return _is_cl(t)


def test_channels_last_decision_needs_a_conv_chain_or_nhwc_input():
    def graph(n_convs, strides=None):
        g = Graph()
        x = g.add_input(TensorType((2, 32, 8, 8), torch.float16, strides, "cuda"), "x")
        w = g.add_input(TensorType((32, 32, 3, 3), torch.float16, None, "cuda"), "w")
        for _ in range(n_convs):
            x = g.add("convolution", [x, w, None], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                                    "transposed": False, "output_padding": [0, 0], "groups": 1}).out
        g.outputs = [x]
        return g

    assert not wants_channels_last(graph(1))
    assert wants_channels_last(graph(2))
    assert wants_channels_last(graph(1, strides=(32 * 64, 1, 8 * 32, 32)))
