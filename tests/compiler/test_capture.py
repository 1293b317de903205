"""Capture: real models compile through Dynamo + aot_autograd into the IR and match eager."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft
from tilecraft.models import ConvBNReLU, MLP, TransformerBlock, tiny_hf_models
from tilecraft.testing import assert_close, seeded


def _check(model, *inputs, codegen=True, **kw):
    compiled = tilecraft.compile(model, codegen=codegen, **kw)
    with torch.no_grad():
        expected = model(*inputs)
        got = compiled(*inputs)
    assert_close(got, expected)
    graphs = compiled.report.graphs
    assert graphs and not any(g.error for g in graphs), compiled.report.summary()
    return compiled


@pytest.mark.parametrize("codegen", [False, True])
def test_mlp(codegen):
    _check(MLP().eval(), torch.randn(5, 16, generator=seeded(1)), codegen=codegen)


def test_cnn():
    c = _check(ConvBNReLU().eval(), torch.randn(2, 3, 16, 16, generator=seeded(2)))
    ops = c.report.graphs[0].ops
    assert ops.get("convolution") == 1 and ops.get("max_pool2d") == 1
    assert "batch_norm" not in ops  # folded into the conv by passes.conv.fold_batchnorm
    assert not c.report.graphs[0].fallbacks


def test_transformer_block():
    c = _check(TransformerBlock(d=32, heads=4).eval(), torch.randn(2, 8, 32, generator=seeded(3)))
    ops = c.report.graphs[0].ops
    assert ops.get("layer_norm") == 2 and ops.get("softmax") == 1 and ops.get("bmm") == 2
    assert not c.report.graphs[0].fallbacks


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
def test_hf_tiny_models(name):
    model = tiny_hf_models()[name]
    ids = torch.randint(0, 100, (2, 12), generator=seeded(4))
    kw = {} if name == "bert" else {"use_cache": False}
    compiled = tilecraft.compile(model)
    with torch.no_grad():
        expected = model(input_ids=ids, **kw)
        got = compiled(input_ids=ids, **kw)
    assert_close(got[0], expected[0])
    rec = compiled.report.graphs
    assert rec and not any(r.error for r in rec)
    assert all(not r.fallbacks for r in rec), [r.fallbacks for r in rec]


def test_graph_break_splits_into_two_graphs():
    def f(x):
        y = torch.sin(x) * 2
        print("graph break")  # Dynamo cannot trace print: two graphs
        return torch.relu(y) + 1

    compiled = tilecraft.compile(f)
    x = torch.randn(7, generator=seeded(5))
    assert_close(compiled(x), f(x))
    assert len(compiled.report.graphs) == 2


def test_python_control_flow_is_specialized():
    def f(x, flag: bool):
        return x.exp() if flag else x.cos()

    compiled = tilecraft.compile(f)
    x = torch.randn(6, generator=seeded(6))
    assert_close(compiled(x, True), f(x, True))
    assert_close(compiled(x, False), f(x, False))


def test_unknown_op_falls_back_and_logs(caplog):
    def f(x):
        return torch.special.erfinv(torch.tanh(x)) + 1  # erfinv has no IR op

    compiled = tilecraft.compile(f)
    x = torch.randn(9, generator=seeded(7))
    with caplog.at_level(logging.WARNING, logger="tilecraft"):
        got = compiled(x)
    assert_close(got, f(x))
    assert compiled.report.graphs[0].fallbacks == ["aten.erfinv.default"]
    msgs = [r.getMessage() for r in caplog.records if "erfinv" in r.getMessage()]
    assert len(msgs) == 1 and "runs through torch" in msgs[0] and "test_capture.py" in msgs[0]


def test_torch_compile_backend_name():
    model = MLP().eval()
    compiled = torch.compile(model, backend="tilecraft")
    x = torch.randn(3, 16, generator=seeded(8))
    with torch.no_grad():
        assert_close(compiled(x), model(x))


def test_training_mode_forward_and_backward():
    model = MLP()
    compiled = tilecraft.compile(model)
    x = torch.randn(4, 16, generator=seeded(9))
    out = compiled(x)
    assert_close(out, model(x))
    out.sum().backward()
    assert model.fc1.weight.grad is not None


def test_explain_prints_ir(capsys):
    text = tilecraft.explain(MLP().eval(), torch.randn(2, 16))
    assert "---- after import" in text and "changed nothing:" in text and "dce" in text  # dce had nothing to do
    assert "addmm(" in text and "gelu(" in text
    assert "addmm(" in capsys.readouterr().out


class TestBadInput:
    def test_not_callable(self):
        with pytest.raises(TypeError, match="expects an nn.Module or a callable, got int"):
            tilecraft.compile(3)

    def test_class_instead_of_instance(self):
        with pytest.raises(TypeError, match="got the class MLP; instantiate it first"):
            tilecraft.compile(MLP)

    def test_wrong_arity(self):
        compiled = tilecraft.compile(MLP())
        with pytest.raises(TypeError, match=r"tilecraft.compile\(MLP\) was called with arguments its signature"):
            compiled(torch.randn(2, 16), torch.randn(2, 16))
        with pytest.raises(TypeError, match="missing a required argument: 'x'"):
            compiled()

    def test_unknown_option(self):
        with pytest.raises(TypeError, match=r"unknown option\(s\) \['bogus'\]"):
            tilecraft.compile(MLP(), bogus=1)


def test_cuda_attention_variants_import_as_one_sdpa_node():
    """On CUDA, Dynamo leaves SDPA as flash/cuDNN/efficient attention (tuples with non-tensor parts): they import
    as one `sdpa` node (torch's fused attention) and the rest of the graph still runs in generated kernels."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tilecraft.compiler.api import CompileReport, Options, compile_graph

    def f(q, k, v):
        out = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, False, 0.0, True)[0]
        return out * 2 + 1

    q, k, v = (torch.randn(2, 4, 8, 16, generator=seeded(i)) for i in range(3))
    gm = make_fx(f, tracing_mode="fake")(q, k, v)
    report = CompileReport()
    prog = compile_graph(gm, Options(), report)
    rec = report.graphs[0]
    assert rec.ops.get("sdpa") == 1 and not rec.fallbacks and rec.error is None
    assert len(rec.kernels) == 1  # the epilogue: one pointwise kernel
    (got,) = prog(q, k, v)
    assert_close(got, F.scaled_dot_product_attention(q, k, v, is_causal=True) * 2 + 1)


def test_batchnorm_stats_type_follows_the_device():
    """Eval batch norm's saved stats: empty on the CPU, float32 [C] for half inputs on CUDA (as torch gives)."""
    from tilecraft.ir import TensorType
    from tilecraft.ir.ops import _bn_stats_type

    assert _bn_stats_type(TensorType((2, 8, 4, 4), torch.float16, None, "cpu")).shape == (0,)
    t = _bn_stats_type(TensorType((2, 8, 4, 4), torch.float16, None, "cuda"))
    assert t.shape == (8,) and t.dtype == torch.float32
