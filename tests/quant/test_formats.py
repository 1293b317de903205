"""Quantized formats: exact pack/unpack round trips, quantization error bounds, checkpoint converters, errors."""
import pytest
import torch

from tilecraft.quant import QuantError, from_awq, from_gptq, pack_int4, quantize_weight, unpack_int4
from tilecraft.quant.formats import AWQ_REVERSE_ORDER, quantize_fp8
from tilecraft.testing import seeded


def test_pack_unpack_int4_round_trip_and_nibble_order():
    codes = torch.randint(0, 16, (5, 12), generator=seeded(1), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (5, 6) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), codes)
    # documented order: even k in the low nibble, odd k in the high nibble
    assert int(packed[2, 3]) == int(codes[2, 6]) + 16 * int(codes[2, 7])


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_quantize_dequantize(group):
    w = torch.randn(24, 256, generator=seeded(2))
    qw = quantize_weight(w, "int4_weight_only", group)
    assert qw.qweight.shape == (24, 128) and qw.scales.shape == (24, 256 // group) == qw.zeros.shape
    deq = qw.dequantize()
    # each element is within half a quantization step of the original
    step = qw.scales.repeat_interleave(group, dim=1)
    assert ((deq - w).abs() <= step * 0.5 + 1e-6).all()
    rel = float((deq - w).norm() / w.norm())
    assert 0.02 < rel < 0.12, rel
    # re-packing the unpacked codes gives back the same bytes
    assert torch.equal(pack_int4(unpack_int4(qw.qweight)), qw.qweight)


def test_int8_quantize_error_bound():
    w = torch.randn(16, 40, generator=seeded(3))
    qw = quantize_weight(w, "int8_weight_only")
    assert qw.qweight.dtype == torch.int8 and qw.scales.shape == (16,)
    assert ((qw.dequantize() - w).abs() <= qw.scales[:, None] * 0.5 + 1e-6).all()
    assert float((qw.dequantize() - w).norm() / w.norm()) < 0.01


def test_fp8_format_on_cpu():
    w = torch.randn(8, 32, generator=seeded(4))
    for per_row in (True, False):
        qw = quantize_fp8(w, per_row)
        assert qw.qweight.dtype == torch.float8_e4m3fn and qw.scales.numel() == (8 if per_row else 1)
        assert float((qw.dequantize() - w).norm() / w.norm()) < 0.05


def _pack_int32(codes, dim):
    """Independent loop packer: 8 codes per int32 along `dim`, nibble i = element 8j + i."""
    codes = codes.long()
    if dim == 0:
        out = torch.zeros(codes.shape[0] // 8, codes.shape[1], dtype=torch.long)
        for i in range(8):
            out |= codes[i::8, :] << (4 * i)
    else:
        out = torch.zeros(codes.shape[0], codes.shape[1] // 8, dtype=torch.long)
        for i in range(8):
            out |= codes[:, i::8] << (4 * i)
    return (out - (out >= 2**31).long() * 2**32).to(torch.int32)


def test_from_gptq_checkpoint():
    g = seeded(5)
    n, k, group = 16, 64, 32
    codes = torch.randint(0, 16, (k, n), generator=g)  # GPTQ stores [K, N]
    zeros = torch.randint(1, 16, (k // group, n), generator=g)
    scales = torch.rand(k // group, n, generator=g).half() + 0.1
    qw = from_gptq(_pack_int32(codes, 0), _pack_int32(zeros - 1, 1), scales, group)  # v1: stored zero - 1
    expected = ((codes - zeros.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)).t()
    assert torch.equal(qw.dequantize(), expected)
    with pytest.raises(QuantError, match="act-order"):
        from_gptq(_pack_int32(codes, 0), _pack_int32(zeros - 1, 1), scales, group, g_idx=torch.arange(k) % 2)


def test_from_awq_checkpoint():
    g = seeded(6)
    n, k, group = 16, 64, 32
    codes = torch.randint(0, 16, (k, n), generator=g)
    zeros = torch.randint(0, 16, (k // group, n), generator=g)
    scales = torch.rand(k // group, n, generator=g).half() + 0.1

    def awq_pack(c):  # AutoAWQ: nibble i holds column 8j + order_map[i], order_map = [0, 2, 4, 6, 1, 3, 5, 7]
        order_map = [0, 2, 4, 6, 1, 3, 5, 7]
        inter = torch.stack([c[:, j::8] for j in order_map], dim=2).reshape(c.shape)
        return _pack_int32(inter, 1)

    assert [0, 2, 4, 6, 1, 3, 5, 7].index(2) == AWQ_REVERSE_ORDER[2]
    qw = from_awq(awq_pack(codes), awq_pack(zeros), scales, group)
    expected = ((codes - zeros.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)).t()
    assert torch.equal(qw.dequantize(), expected)


@pytest.mark.parametrize("shape,group,match", [
    ((8, 63), 32, "K=63 is odd"),
    ((8, 96), 64, "K=96 is not divisible by group_size=64"),
    ((8, 64), 48, "group_size must be one of"),
])
def test_int4_shape_errors(shape, group, match):
    with pytest.raises(QuantError, match=match):
        quantize_weight(torch.randn(shape), "int4_weight_only", group)


def test_bad_dtype_and_scheme_errors():
    with pytest.raises(QuantError, match="expects a float32/float16/bfloat16 weight, got torch.int32"):
        quantize_weight(torch.ones(4, 32, dtype=torch.int32), "int8_weight_only")
    with pytest.raises(QuantError, match="unknown quantization scheme 'int3'"):
        quantize_weight(torch.randn(4, 32), "int3")
