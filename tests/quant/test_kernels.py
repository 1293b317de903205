"""Quantized-linear Triton kernels (interpreter) against their own dequantized float32 reference."""
import pytest
import torch

from tilecraft.quant import QuantError, make_kernel, quantize_weight, run_quantized_linear
from tilecraft.quant.formats import QuantizedWeight, dequantize
from tilecraft.testing import assert_close, seeded


def _run(scheme, x, qw, bias, template, config=None):
    if scheme == "int8_weight_only":
        return run_quantized_linear("wq_linear_int8", [x, qw.qweight, qw.scales, bias], {}, config, template)
    return run_quantized_linear("wq_linear_int4", [x, qw.qweight, qw.scales, qw.zeros, bias],
                                {"group_size": qw.group_size}, config, template)


def _reference(x, qw, bias):
    out = x.float().reshape(-1, x.shape[-1]) @ dequantize(qw).t()
    if bias is not None:
        out = out + bias.float()
    return out.reshape(*x.shape[:-1], -1).to(x.dtype)


CASES = [  # (scheme, group, K, N)
    ("int8_weight_only", 0, 64, 48), ("int8_weight_only", 0, 50, 37),  # ragged N and K
    ("int4_weight_only", 32, 64, 48), ("int4_weight_only", 64, 64, 37), ("int4_weight_only", 32, 96, 20),
]


@pytest.mark.parametrize("template", ["wq_gemv", "wq_gemm"])
@pytest.mark.parametrize("scheme,group,K,N", CASES)
@pytest.mark.parametrize("M", [1, 3, 16])
def test_kernel_matches_dequantized_reference(template, scheme, group, K, N, M):
    g = seeded(hash((template, scheme, group, K, N, M)) & 0xFFFF)
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group or 128)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.randn(M, K, generator=g).to(dtype)
        bias = torch.randn(N, generator=g).to(dtype) if M != 3 else None
        got = _run(scheme, x, qw, bias, template)
        assert_close(got, _reference(x, qw, bias), msg=f"{template} {scheme} M={M} {dtype}")


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 32)])
@pytest.mark.parametrize("template,config", [
    ("wq_gemv", {"BLOCK_N": 8, "BLOCK_K": 16, "SPLIT_K": 3, "num_warps": 1, "num_stages": 1}),
    ("wq_gemv", {"BLOCK_N": 16, "BLOCK_K": 128, "SPLIT_K": 1, "num_warps": 4, "num_stages": 1}),
    ("wq_gemm", {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 2, "num_warps": 4, "num_stages": 1}),
])
def test_knobs_split_k_and_multi_group_chunks(scheme, group, template, config):
    """Split-K (atomics into a float32 workspace) and BLOCK_K spanning several int4 groups give the same result."""
    g = seeded(7)
    K, N, M = 128, 24, 2
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group or 128)
    x, bias = torch.randn(M, 2, K, generator=g), torch.randn(N, generator=g)  # 3-D input: leading dims kept
    got = _run(scheme, x, qw, bias, template, config)
    assert got.shape == (M, 2, N)
    assert_close(got, _reference(x, qw, bias))


def test_kernel_protocol_for_the_tuner():
    k = make_kernel("int4_weight_only", 4, 48, 64, torch.float16, group=32, has_bias=True, template="wq_gemm")
    assert k.template == "wq_gemm" and k.shapes == {"M": 4, "N": 48, "K": 64, "group": 32}
    assert set(k.default_config()) == {"BLOCK_M", "BLOCK_N", "BLOCK_K", "SPLIT_K", "num_warps", "num_stages", "TRANS"}
    assert k.key != make_kernel("int8_weight_only", 4, 48, 64, torch.float16, template="wq_gemm").key
    args = k.make_args("cpu", seed=1)
    k.launch(args, k.default_config())
    x, w, s, z, b, out = args
    ref = (x.float() @ dequantize(QuantizedWeight("int4_weight_only", w, s, z, 32, (48, 64))).t() + b.float()).half()
    assert_close(out, ref)
    with pytest.raises(QuantError, match="BLOCK_K <= group size"):
        k.launch(args, dict(k.default_config(), BLOCK_K=64))


def test_errors_name_the_problem():
    qw = quantize_weight(torch.randn(8, 32), "int8_weight_only")
    with pytest.raises(QuantError, match="input has 16 features, the quantized weight expects K=32"):
        run_quantized_linear("wq_linear_int8", [torch.randn(2, 16), qw.qweight, qw.scales, None], {})
    with pytest.raises(QuantError, match="activations must be float32/float16/bfloat16, got torch.int64"):
        run_quantized_linear("wq_linear_int8", [torch.ones(2, 32, dtype=torch.long), qw.qweight, qw.scales, None],
                             {})
    fq = quantize_weight(torch.randn(8, 32), "fp8")
    with pytest.raises(QuantError, match="fp8 .*compute capability >= 9.0 \\(Hopper\\).*cpu"):
        run_quantized_linear("fp8_linear", [torch.randn(2, 32), fq.qweight, fq.scales, None], {})


@pytest.mark.parametrize("config", [
    {"BLOCK_N": 4, "BLOCK_K": 32, "SPLIT_K": 3, "num_warps": 1, "num_stages": 1},
    {"BLOCK_N": 2, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": 2, "num_stages": 1},
])
def test_int8_gemv_single_row_accumulates_a_tile_and_reduces_once(config):
    """M=1 (decode) takes the GEMV's one-row branch: ragged N and K, split-K or not, with bias."""
    g = seeded(11)
    K, N = 100, 13
    qw = quantize_weight(torch.randn(N, K, generator=g), "int8_weight_only", 128)
    for dtype in (torch.float32, torch.bfloat16):
        x, bias = torch.randn(1, K, generator=g).to(dtype), torch.randn(N, generator=g).to(dtype)
        got = _run("int8_weight_only", x, qw, bias, "wq_gemv", config)
        assert_close(got, _reference(x, qw, bias), msg=str(dtype))


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 32),
                                          ("int4_weight_only", 128), ("fp8", 0)])
def test_gpu_default_configs_are_valid_for_decode_and_prefill_shapes(monkeypatch, scheme, group):
    """The H100 defaults (not the interpreter's small tiles) pass the kernels' own config checks."""
    from tilecraft.quant import kernels as qk

    monkeypatch.setattr(qk, "interpreting", lambda: False)
    for M in (1, 3, 16, 64, 300):
        for K, N in ((4096, 4096), (4096, 11008), (384, 40)):
            template = qk.choose_template(scheme, M)
            cfg = qk.default_config(template, scheme, M, N, K, group)
            k = qk.QuantKernel(name="t", template=template, source="", fn_name="f", args=[], grid=None,
                               shapes={"M": M, "N": N, "K": K, "group": group}, dtype=torch.bfloat16,
                               scheme=scheme)
            k.check_config(cfg)
            assert (template == "wq_gemv") == (M == 1 and scheme != "fp8"), (M, template)


def test_ir_reference_falls_back_to_eager_when_a_kernel_cannot_run(monkeypatch, caplog):
    """The torch fallback of a quantized-linear group (the IR op's reference) must not fail with the kernel: a
    kernel that does not compile (simulated) gives the eager dequantize-then-matmul result and one warning;
    shape errors (QuantError) still surface."""
    import tilecraft.quant.ops as qops
    from tilecraft.ir.ops import REGISTRY

    def broken(*a, **k):
        raise RuntimeError("PassManager::run failed (simulated compile failure)")

    monkeypatch.setattr(qops, "run_quantized_linear", broken)
    monkeypatch.setattr(qops, "_WARNED", set())
    g = seeded(21)
    qw = quantize_weight(torch.randn(8, 32, generator=g), "int8_weight_only")
    x, bias = torch.randn(3, 32, generator=g), torch.randn(8, generator=g)
    ref = REGISTRY["wq_linear_int8"].ref
    with caplog.at_level("WARNING", logger="tilecraft"):
        got = ref(x, qw.qweight, qw.scales, bias)
        ref(x, qw.qweight, qw.scales, bias)
    assert_close(got, _reference(x, qw, bias))
    assert sum("wq_linear_int8 kernel failed" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("scheme,group,K,N", CASES)
@pytest.mark.parametrize("tiles", [None, (32, 64), (8, 128)])
def test_dequantize_into_matches_the_reference_dequantization(scheme, group, K, N, tiles):
    """The "aten" backend's first step: the whole weight in the activation dtype, for any tile shape (int4: a
    BLOCK_K above the group size is capped to it, so each tile reads one scale and zero point per row)."""
    from tilecraft.quant.kernels import dequantize_into

    qw = quantize_weight(torch.randn(N, K, generator=seeded(K * 31 + N)), scheme, group)
    for dtype in (torch.float32, torch.bfloat16):
        got = dequantize_into(scheme, qw.qweight, qw.scales, qw.zeros, group, dtype, tiles)
        assert got.shape == (N, K) and got.dtype == dtype
        assert_close(got, dequantize(qw).to(dtype))


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 128)])
def test_gpu_decode_default_splits_k_and_matches_the_reference(monkeypatch, scheme, group):
    """The GPU default at M=16 (thin N tiles, K split 4 ways and reduced in the kernel; int4: the weight tile on
    the dot's left, 2 warps, the codes to pairs in inline PTX), run on the interpreter (int4 without its PTX:
    tests/quant/test_asm_unpack.py checks that part): whole sums, twice (the split counters reset themselves)."""
    from tilecraft.quant import kernels as qk

    M, N, K = 16, 64, 2048
    monkeypatch.setattr(qk, "interpreting", lambda: False)
    cfg = qk.default_config("wq_gemm", scheme, M, N, K, group)
    monkeypatch.undo()
    # int4: one group (128) per chunk, its scale on the dot's result (the codes' 16-bit-float bit patterns)
    int4 = scheme == "int4_weight_only"
    assert (cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"], cfg["TRANS"]) == (32, 128 if int4 else 256, 4, int4)
    assert not cfg.get("SCALE_W", False) and cfg.get("ASM", False) == int4
    assert cfg["num_warps"] == (2 if int4 else 4)
    cfg = {**cfg, "ASM": False}
    g = seeded(29)
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group)
    x = torch.randn(M, K, generator=g)
    for _ in range(2):
        assert_close(_run(scheme, x, qw, None, "wq_gemm", cfg), _reference(x, qw, None), scale=10)  # K=2048 sums


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 32)])
def test_dequant_matmul_in_row_blocks_matches_the_whole_weight(scheme, group):
    """The "aten" backend in blocks of weight rows (each dequantized, then multiplied into its columns of out):
    with a bias, with a residual (into another buffer, and in place in the residual's own), and plain; 600 rows
    in blocks of 256, 256 and 88."""
    from tilecraft.quant.kernels import dequant_matmul

    N, K, M = 600, 64, 5
    g = seeded(41)
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group)
    x, b, r = torch.randn(M, K, generator=g), torch.randn(N, generator=g), torch.randn(M, N, generator=g)
    ref = x @ dequantize(qw).t()
    args = (scheme, x, qw.qweight, qw.scales, qw.zeros, group)
    for chunk in (0, 1):  # 0: the whole weight; 1 byte: the smallest block, 256 rows
        assert_close(dequant_matmul(*args, chunk_bytes=chunk), ref, scale=4)
        assert_close(dequant_matmul(*args, bias=b, chunk_bytes=chunk), ref + b, scale=4)
        out = torch.empty(M, N)
        assert dequant_matmul(*args, out=out, residual=r, chunk_bytes=chunk) is out
        assert_close(out, ref + r, scale=4)
        r2 = r.clone()
        dequant_matmul(*args, out=r2, residual=r2, chunk_bytes=chunk)
        assert_close(r2, ref + r, scale=4)
