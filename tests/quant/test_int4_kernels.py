"""int4 GEMV / GEMM kernels (nibbles unpacked into K order with tl.join + tl.reshape) against the float32
dequantized reference, one test per kernel branch: chunk vs group size, ragged M and N, split-K, activation dtype."""
import zlib

import pytest
import torch

from tilecraft.quant import QuantError, make_kernel, quantize_weight
from tilecraft.quant.formats import QuantizedWeight, dequantize, pack_int4
from tilecraft.testing import assert_close, seeded

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _launch(template, x, qw, bias, config):
    """Run one int4 kernel through make_kernel + launch; returns out [M, N]."""
    M, K = x.shape
    N = qw.shape[0]
    k = make_kernel("int4_weight_only", M, N, K, x.dtype, qw.group_size, bias is not None, template=template)
    out = torch.full((M, N), float("nan"), dtype=x.dtype)
    b = bias if bias is not None else torch.empty(1, dtype=x.dtype)
    k.launch([x, qw.qweight, qw.scales, qw.zeros, b, out], config)
    return out


def _reference(x, qw, bias):
    out = x.float() @ dequantize(qw).t()
    return (out + bias.float() if bias is not None else out).to(x.dtype)


def _case(tag, M, N, K, group, dtype, with_bias=True):
    g = seeded(zlib.crc32(repr(tag).encode()) & 0xFFFF)  # a fixed seed per case
    qw = quantize_weight(torch.randn(N, K, generator=g), "int4_weight_only", group)
    x = torch.randn(M, K, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype) if with_bias else None
    return x, qw, bias


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_k,group,K,split_k", [
    (32, 64, 128, 1),   # BLOCK_K < GROUP: two chunks share one group's scale and zero
    (64, 64, 128, 2),   # BLOCK_K == GROUP, split-K over the two groups
    (128, 32, 160, 1),  # BLOCK_K > GROUP: 4 groups per chunk; K=160 leaves a ragged last chunk (1 of 4 groups)
    (64, 32, 192, 2),   # BLOCK_K > GROUP with split-K: each split starts on a chunk boundary
])
@pytest.mark.parametrize("M", [1, 3])  # M=3: BLOCK_M=4, one masked activation row
def test_gemv_int4_chunk_vs_group(dtype, block_k, group, K, split_k, M):
    x, qw, bias = _case((block_k, group, K, M, dtype), M, 37, K, group, dtype, M == 1)
    cfg = {"BLOCK_N": 16, "BLOCK_K": block_k, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1}
    got = _launch("wq_gemv", x, qw, bias, cfg)  # N=37: the last of 3 N blocks is ragged
    assert_close(got, _reference(x, qw, bias), msg=f"gemv int4 BLOCK_K={block_k} group={group} {dtype}")


@pytest.mark.parametrize("scale_w", [False, True])  # group scale on the dot's result / on the weight tile
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,block_k,group,split_k", [
    (20, 37, 32, 32, 1),  # M not a multiple of BLOCK_M, N ragged, BLOCK_K == GROUP
    (20, 37, 32, 32, 2),  # same with split-K (float32 workspace + atomics)
    (5, 48, 16, 64, 1),   # BLOCK_K < GROUP: 4 chunks per group, one (padded) M block
    (33, 24, 64, 64, 2),  # three M blocks, BLOCK_K == GROUP == 64, split-K
])
def test_gemm_int4_one_dot_per_chunk(scale_w, dtype, M, N, block_k, group, split_k):
    x, qw, bias = _case((M, N, block_k, group, split_k, dtype), M, N, 128, group, dtype,
                        split_k == 1)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": block_k, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1,
           "SCALE_W": scale_w}
    got = _launch("wq_gemm", x, qw, bias, cfg)
    assert_close(got, _reference(x, qw, bias), msg=f"gemm int4 M={M} N={N} BLOCK_K={block_k} {dtype} {scale_w}")


@pytest.mark.parametrize("template,config", [
    ("wq_gemv", {"BLOCK_N": 8, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": 1, "num_stages": 1}),
    ("wq_gemm", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}),
    ("wq_gemm", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": 4, "num_stages": 1,
                 "TRANS": True, "SCALE_W": True}),
])
def test_int4_nibble_order_with_one_hot_activations(template, config):
    """x = e_k picks column k of the dequantized weight: low nibble of byte j is k=2j, high nibble is k=2j+1."""
    N, K, group = 8, 64, 32
    codes = (torch.arange(N * K).reshape(N, K) * 7 % 16).to(torch.uint8)  # neighbours differ in every row
    scales = torch.full((N, K // group), 0.5)
    zeros = torch.full((N, K // group), 3, dtype=torch.uint8)
    qw = QuantizedWeight("int4_weight_only", pack_int4(codes), scales, zeros, group, (N, K))
    x = torch.eye(K, dtype=torch.float16)[[0, 1, 2, 33, 62, 63]]
    got = _launch(template, x, qw, None, config)
    expect = ((codes.float() - 3) * 0.5).t()[[0, 1, 2, 33, 62, 63]].half()
    assert torch.equal(got, expect), (got - expect).abs().max()


def test_int4_gemm_config_checks():
    k = make_kernel("int4_weight_only", 16, 16, 128, torch.float16, group=32, template="wq_gemm")
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}
    with pytest.raises(QuantError, match="int4 GEMM needs 16 <= BLOCK_K <= group size 32, or SCALE_W"):
        k.check_config(cfg)
    k.check_config(dict(cfg, SCALE_W=True))  # several groups per chunk: scales go on the weight tile
    with pytest.raises(QuantError, match="BLOCK_K dividing K=96"):
        make_kernel("int4_weight_only", 16, 16, 96, torch.float16, group=32, template="wq_gemm").check_config(
            dict(cfg, SCALE_W=True))
    with pytest.raises(QuantError, match="tl.dot needs .*BLOCK_K >= 16"):
        k.check_config(dict(cfg, BLOCK_K=8))
    k.check_config(dict(cfg, BLOCK_K=16, SCALE_W=True))  # 16 is allowed: one full-K dot per chunk
    for other in (make_kernel("int8_weight_only", 16, 16, 128, torch.float16, template="wq_gemm"),
                  make_kernel("int4_weight_only", 1, 16, 128, torch.float16, group=32, template="wq_gemv")):
        with pytest.raises(QuantError, match="SCALE_W .* is an int4 GEMM knob"):
            other.check_config(dict(other.default_config(), SCALE_W=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,N,block_k,group,split_k", [
    (20, 37, 64, 32, 1),   # two groups per chunk, ragged M and N
    (5, 48, 128, 32, 2),   # four groups per chunk, split-K
])
def test_gemm_int4_chunk_spans_several_groups(dtype, M, N, block_k, group, split_k):
    """SCALE_W with BLOCK_K > GROUP: each byte gets its own group's scale and zero before the one dot."""
    x, qw, bias = _case((M, N, block_k, group, split_k, dtype, "multi"), M, N, 128, group, dtype, True)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": block_k, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1,
           "SCALE_W": True}
    got = _launch("wq_gemm", x, qw, bias, cfg)
    # (float32: the weight tile is scaled before a 64-128 long dot, so sums round in another order: 2x tolerance)
    assert_close(got, _reference(x, qw, bias), scale=2.0, msg=f"gemm int4 M={M} BLOCK_K={block_k} group={group} {dtype}")


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 32)])
@pytest.mark.parametrize("trans,split_k,scale_w", [(True, 1, False), (True, 3, True), (False, 2, False)])
def test_gemm_weight_on_the_left_and_serial_split_k(scheme, group, trans, split_k, scale_w):
    """TRANS (out^T = W x^T, then transposed back) and the in-kernel split-K reduction (K=160 in 3 splits: the
    last split is short), launched three times on one kernel: the arrival counters reset after each launch."""
    g = seeded(31 + split_k)
    M, N, K = 20, 37, 160
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group or 128)
    x, bias = torch.randn(M, K, generator=g), torch.randn(N, generator=g)
    k = make_kernel(scheme, M, N, K, x.dtype, group, True, template="wq_gemm")
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": split_k, "num_warps": 4, "num_stages": 1,
           "TRANS": trans, **({"SCALE_W": True} if scale_w and group else {})}
    z = qw.zeros if qw.zeros is not None else torch.empty(1, dtype=torch.uint8)
    for _ in range(3):
        out = torch.full((M, N), float("nan"))
        k.launch([x, qw.qweight, qw.scales, z, bias, out], cfg)
        assert_close(out, _reference(x, qw, bias), msg=f"{scheme} TRANS={trans} SPLIT_K={split_k}")
    if split_k > 1:
        ws, counters = k.split_workspace(cfg, k.grid(cfg), "cpu")
        assert counters.shape == (6,) and not counters.any()  # 2 x 3 tiles, every counter back at zero
