"""tilecraft.quantize and compile(quantize=...): module rewrite, accuracy vs float, report, capture as one node."""
import copy

import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.models import MLP
from tilecraft.quant import QuantError, QuantizedLinear, quantize_weight, unpack_int4
from tilecraft.testing import assert_close, seeded


def _rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("scheme,group,bound", [("int8_weight_only", 128, 0.02), ("int4_weight_only", 32, 0.15),
                                                ("int4_weight_only", 64, 0.15)])
def test_quantized_model_close_to_float(scheme, group, bound):
    torch.manual_seed(1)
    model = MLP(64, 128, 48).eval()
    ref_model = copy.deepcopy(model)
    x = torch.randn(8, 64, generator=seeded(1))
    q = tilecraft.quantize(model, scheme, group_size=group, calibration_inputs=[x])
    assert isinstance(q.fc1, QuantizedLinear) and isinstance(q.fc2, QuantizedLinear)
    with torch.no_grad():
        err = _rel(q(x), ref_model(x))
    assert err < bound, err
    rep = q.tilecraft_quant_report
    assert [l.name for l in rep.layers] == ["fc1", "fc2"]
    assert rep.model_rel_error == pytest.approx(err, rel=1e-6)
    assert all(0 < l.output_rel_error < bound and 0 < l.weight_rel_error < bound for l in rep.layers)
    assert "fc1" in str(rep) and "overall model output rel err" in str(rep)


def test_compile_quantized_mlp_runs_the_kernels_and_matches_reference():
    torch.manual_seed(2)
    model = MLP(64, 96, 48).eval()
    compiled = tilecraft.compile(model, quantize="int4_weight_only")  # quantizes a copy of `model` (group 32)
    x = torch.randn(3, 64, generator=seeded(2))
    with torch.no_grad():
        got = compiled(x)
        expected = compiled.model(x)  # eager: the custom ops' dequantize-then-matmul reference
    assert_close(got, expected)
    rec = compiled.report.graphs[0]
    assert [(k.template, k.info["ops"]) for k in rec.kernels] == [("wq_gemm", ["wq_linear_int4", "gelu"]),
                                                                  ("wq_gemm", ["wq_linear_int4"])]
    assert rec.ops.get("wq_linear_int4") == 2 and not rec.fallbacks, compiled.report.summary()
    assert compiled.model.fc1.group_size == 32 and type(model.fc1) is nn.Linear


def test_compile_int8_with_explicit_dtype_fp16():
    torch.manual_seed(3)
    model = MLP(64, 96, 48).eval().half()
    compiled = tilecraft.compile(model, quantize="int8_weight_only")
    x = torch.randn(16, 64, generator=seeded(3)).half()
    with torch.no_grad():
        assert_close(compiled(x), compiled.model(x))
    assert compiled.report.graphs[0].ops.get("wq_linear_int8") == 2


def test_loading_prequantized_int4_weights():
    w = torch.randn(48, 64, generator=seeded(4))
    qw = quantize_weight(w, "int4_weight_only", 32)
    bias = torch.randn(48, generator=seeded(5))
    layer = QuantizedLinear.from_quantized(qw.qweight, qw.scales.half(), qw.zeros, 32, bias)
    x = torch.randn(5, 64, generator=seeded(6))
    codes = unpack_int4(qw.qweight).float().reshape(48, 2, 32)
    w_ref = ((codes - qw.zeros.float()[..., None]) * qw.scales.half().float()[..., None]).reshape(48, 64)
    assert_close(layer(x), x @ w_ref.t() + bias)
    assert_close(layer.dequantized_weight(), w_ref)
    with pytest.raises(QuantError, match=r"scales/zeros must be \[N, K//group_size\] = \[48, 2\]"):
        QuantizedLinear.from_quantized(qw.qweight, qw.scales[:, :1], qw.zeros[:, :1], 32)
    with pytest.raises(QuantError, match="unknown int4 checkpoint layout 'exl2'"):
        QuantizedLinear.from_quantized(qw.qweight, qw.scales, qw.zeros, 32, layout="exl2")


def test_quantize_errors():
    with pytest.raises(QuantError, match="layer 'fc1': int4_weight_only: in_features K=64 is not divisible by "
                                         "group_size=128"):
        tilecraft.quantize(MLP(64, 96, 48), "int4_weight_only", group_size=128)
    with pytest.raises(QuantError, match="layer 'fc1'.*K=33 is odd"):
        tilecraft.quantize(MLP(33, 64, 8), "int4_weight_only", group_size=32)
    with pytest.raises(QuantError, match="fp8 quantization needs a CUDA GPU with compute capability >= 9.0"):
        tilecraft.quantize(MLP(64, 96, 48), "fp8")
    with pytest.raises(QuantError, match="no nn.Linear layers"):
        tilecraft.quantize(nn.ReLU(), "int8_weight_only")
    with pytest.raises(QuantError, match="unknown quantization scheme 'int2'"):
        tilecraft.quantize(MLP(), "int2")


def test_quantize_keeps_unquantized_layers_unchanged():
    model = MLP(64, 96, 48)
    tilecraft.quantize_(model, "int8_weight_only", skip=("fc2",))
    assert isinstance(model.fc1, QuantizedLinear) and type(model.fc2) is nn.Linear


class _Net(nn.Module):
    """A norm and a shared (tied) submodule around two Linears: what the copy must share and keep."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(64)
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 64)
        self.act = nn.GELU()
        self.again = self.act  # one module reachable under two names

    def forward(self, x):
        return self.fc2(self.again(self.fc1(self.norm(x))))


def _float_net(seed, rows):
    """A _Net, its state, an input and its float output (to check later that nothing of it changed)."""
    torch.manual_seed(seed)
    model = _Net().eval()
    x = torch.randn(rows, 64, generator=seeded(seed + 10))
    with torch.no_grad():
        return model, {k: v.clone() for k, v in model.state_dict().items()}, x, model(x)


def _assert_unchanged(model, before, x, y_float):
    assert type(model.fc1) is nn.Linear and type(model.fc2) is nn.Linear
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), y_float)  # the float model still computes what it did


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:64", "int4_weight_only"])
def test_quantize_returns_a_new_model_sharing_the_other_weights(scheme):
    model, before, x, y_float = _float_net(4, 5)
    with torch.no_grad():
        q = tilecraft.quantize(model, scheme)
        assert q is not model and isinstance(q.fc1, QuantizedLinear) and type(model.fc1) is nn.Linear
        assert q.norm is not model.norm and q.norm.weight is model.norm.weight  # shared, not copied
        assert q.again is q.act
        assert q.fc1.group_size == (64 if scheme.startswith("int4") else 0)
        _assert_unchanged(model, before, x, y_float)
        expect = torch.nn.functional.linear(model.act(torch.nn.functional.linear(
            model.norm(x), q.fc1.dequantized_weight(), model.fc1.bias)), q.fc2.dequantized_weight(), model.fc2.bias)
        assert_close(q(x), expect)


def test_quantize_in_place_accepts_scheme_strings():
    model = _Net()
    assert tilecraft.quantize_(model, "int4_weight_only:32") is model
    assert isinstance(model.fc1, QuantizedLinear) and model.fc1.group_size == 32
    with pytest.raises(QuantError, match="conflicts with group_size=64"):
        tilecraft.quantize_(_Net(), "int4_weight_only:32", group_size=64)
    with pytest.raises(QuantError, match="only int4_weight_only takes a group size"):
        tilecraft.quantize(_Net(), "int8_weight_only:32")


def test_compile_quantized_leaves_the_model_unchanged_and_compiles_twice():
    model, before, x, y_float = _float_net(5, 4)
    with torch.no_grad():
        outs = []
        for scheme in ("int8_weight_only", "int4_weight_only:32"):
            torch._dynamo.reset()
            c = tilecraft.compile(model, quantize=scheme)
            outs.append(c(x))
            assert_close(outs[-1], c.model(x))  # its own dequantized reference
            op = "wq_linear_int8" if scheme.startswith("int8") else "wq_linear_int4"
            assert c.report.graphs[0].ops.get(op) == 2, c.report.summary()
        _assert_unchanged(model, before, x, y_float)
        assert _rel(outs[0], y_float) < 0.02 and _rel(outs[1], y_float) < 0.15
