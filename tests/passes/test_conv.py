"""fold_batchnorm: conv → eval batch_norm becomes one conv with folded parameters; results unchanged."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft
from tilecraft.ir import Graph, TensorType, interpret, verify
from tilecraft.models import ConvBNReLU
from tilecraft.passes import fold_batchnorm
from tilecraft.testing import assert_close, seeded


def _bn_params(c, g, dtype=torch.float32):
    return [(torch.rand(c, generator=g) + 0.5).to(dtype), torch.randn(c, generator=g).to(dtype),
            torch.randn(c, generator=g).to(dtype), (torch.rand(c, generator=g) + 0.5).to(dtype)]


def _graph(x, w, b, bn, relu=True, groups=1, keep_conv_output=False):
    g = Graph()
    xv, wv = g.add_input(TensorType.of(x), "x"), g.add_input(TensorType.of(w), "w")
    bv = g.add_input(TensorType.of(b), "b") if b is not None else None
    pv = [g.add_input(TensorType.of(t), n) for t, n in zip(bn, ["gamma", "beta", "mean", "var"])]
    conv = g.add("convolution", [xv, wv, bv], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                              "transposed": False, "output_padding": [0, 0], "groups": groups})
    norm = g.add("batch_norm", [conv.out, *pv], {"momentum": 0.1, "eps": 1e-3})
    y = g.add("relu", [norm.out]).out if relu else norm.out
    g.outputs = [y] + ([conv.out] if keep_conv_output else [])
    inputs = [x, w] + ([b] if b is not None else []) + list(bn)
    return g, inputs


@pytest.mark.parametrize("with_bias,groups,dtype", [(True, 1, torch.float32), (False, 1, torch.float32),
                                                    (True, 2, torch.float32), (True, 1, torch.float16)])
def test_fold_keeps_results_and_removes_batch_norm(with_bias, groups, dtype):
    g = seeded(1)
    x = torch.randn(2, 4, 6, 6, generator=g).to(dtype)
    w = torch.randn(6, 4 // groups, 3, 3, generator=g).to(dtype)
    b = torch.randn(6, generator=g).to(dtype) if with_bias else None
    bn = _bn_params(6, g, dtype)
    graph, inputs = _graph(x, w, b, bn, groups=groups)
    expected = interpret(graph, inputs)[0]
    eager = F.relu(F.batch_norm(F.conv2d(x.float(), w.float(), None if b is None else b.float(), 1, 1, 1, groups),
                                bn[2].float(), bn[3].float(), bn[0].float(), bn[1].float(), False, 0.1, 1e-3))
    folded = verify(fold_batchnorm(graph))
    ops = [n.op for n in folded.nodes]
    assert "batch_norm" not in ops and ops.count("convolution") == 1
    got = interpret(folded, inputs)[0]
    assert_close(got, expected, scale=2)
    assert_close(got.float(), eager, scale=1 if dtype == torch.float32 else 1e3)  # fp16 vs fp32 math


def test_no_fold_when_conv_output_is_used_elsewhere():
    g = seeded(2)
    x, w = torch.randn(1, 3, 5, 5, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    graph, inputs = _graph(x, w, None, _bn_params(4, g), keep_conv_output=True)
    before = interpret(graph, inputs)
    after = fold_batchnorm(graph)
    assert [n.op for n in after.nodes].count("batch_norm") == 1
    for a, e in zip(interpret(after, inputs), before):
        assert_close(a, e)


class ResidualConvBN(nn.Module):
    """conv3x3-BN-ReLU residual block (the ANCHORS.md conv workload, small)."""

    def __init__(self, c=8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


def _randomize_bn(model, seed):
    g = seeded(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("make,shape", [(lambda: ConvBNReLU(), (2, 3, 16, 16)),
                                        (lambda: ResidualConvBN(), (2, 8, 10, 10))])
def test_compile_folds_batchnorm_end_to_end(make, shape):
    model = _randomize_bn(make().eval(), 3)
    x = torch.randn(*shape, generator=seeded(4))
    compiled = tilecraft.compile(model)
    with torch.no_grad():
        assert_close(compiled(x), model(x))
    ops = compiled.report.graphs[0].ops
    assert "batch_norm" not in ops and ops["convolution"] >= 1, ops
