"""tilecraft.quantize and compile(quantize=...): module rewrite, accuracy vs float, report, capture as one node."""
import copy

import pytest
import torch
import torch.nn as nn

import tilecraft
import tilecraft.quant.ops as qops
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


def test_compile_quantized_mlp_runs_the_kernels_and_matches_reference(monkeypatch):
    calls = []
    real = qops.run_quantized_linear
    monkeypatch.setattr(qops, "run_quantized_linear", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    torch.manual_seed(2)
    model = MLP(64, 96, 48).eval()
    compiled = tilecraft.compile(model, quantize="int4_weight_only")  # quantizes `model` in place (group 32)
    x = torch.randn(3, 64, generator=seeded(2))
    with torch.no_grad():
        got = compiled(x)
        expected = model(x)  # eager: the custom ops' dequantize-then-matmul reference
    assert_close(got, expected)
    assert calls == ["wq_linear_int4", "wq_linear_int4"]
    rec = compiled.report.graphs[0]
    assert rec.ops.get("wq_linear_int4") == 2 and not rec.fallbacks, compiled.report.summary()
    assert model.fc1.group_size == 32


def test_compile_int8_with_explicit_dtype_fp16():
    torch.manual_seed(3)
    model = MLP(64, 96, 48).eval().half()
    compiled = tilecraft.compile(model, quantize="int8_weight_only")
    x = torch.randn(16, 64, generator=seeded(3)).half()
    with torch.no_grad():
        assert_close(compiled(x), model(x))
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
    tilecraft.quantize(model, "int8_weight_only", skip=("fc2",))
    assert isinstance(model.fc1, QuantizedLinear) and type(model.fc2) is nn.Linear
