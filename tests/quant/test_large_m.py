"""The large-M quantized GEMM (wq_gemm with TRANS and 128-256-row activation tiles: Hopper's wgmma with the
dequantized weight tile as its register A operand) against the float32 dequantize-then-matmul reference in the
interpreter, its candidate configs, and what it compiles to for sm_90 (bench/qgemm_ptx.py, Triton's CUDA backend
on the CPU)."""
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from tilecraft.quant import make_kernel, quantize_weight
from tilecraft.quant import kernels as qk
from tilecraft.quant.formats import dequantize
from tilecraft.testing import assert_close, seeded

ROOT = Path(__file__).resolve().parents[2]


def _reference(x, qw, bias):
    out = x.float() @ dequantize(qw).t()
    return (out + bias.float() if bias is not None else out).to(x.dtype)


@pytest.mark.parametrize("scheme,group,K", [("int8_weight_only", 0, 192), ("int8_weight_only", 0, 200),
                                            ("int4_weight_only", 32, 192), ("int4_weight_only", 64, 192),
                                            ("int4_weight_only", 128, 256)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block_m,with_bias", [(128, True), (256, False)])
def test_large_m_tiles_match_the_dequantized_reference(scheme, group, K, dtype, block_m, with_bias):
    """Ragged M (130 rows) and N (40 columns in 32-wide weight tiles), int8 with a ragged K (200), int4 chunks
    of min(64, group) (the one-join byte unpack; group 64 with its scale on the dot's result, the others on the
    weight tile), bias on and off."""
    M, N = 130, 40
    g = seeded(zlib.crc32(f"{scheme}{group}{K}{dtype}{block_m}".encode()) & 0xFFFF)
    qw = quantize_weight(torch.randn(N, K, generator=g), scheme, group or 128)
    x = torch.randn(M, K, generator=g).to(dtype)
    bias = torch.randn(N, generator=g).to(dtype) if with_bias else None
    k = make_kernel(scheme, M, N, K, dtype, group, with_bias, template="wq_gemm")
    cfg = {"BLOCK_M": block_m, "BLOCK_N": 32, "BLOCK_K": min(64, group or 64), "SPLIT_K": 1, "num_warps": 8,
           "num_stages": 3, "TRANS": True, **({"SCALE_W": group != 64} if group else {})}
    out = torch.full((M, N), float("nan"), dtype=dtype)
    z = qw.zeros if qw.zeros is not None else torch.empty(1, dtype=torch.uint8)
    k.launch([x, qw.qweight, qw.scales, z, bias if bias is not None else torch.empty(1, dtype=dtype), out], cfg)
    assert_close(out, _reference(x, qw, bias), scale=4.0,  # (int8: the channel scale after the K sum)
                 msg=f"{scheme} g{group} K={K} {dtype} BLOCK_M={block_m}")


@pytest.mark.parametrize("scheme,group", [("int8_weight_only", 0), ("int4_weight_only", 128),
                                          ("int4_weight_only", 32)])
def test_large_m_candidates_are_valid_and_the_gpu_default(monkeypatch, scheme, group):
    """Every candidate passes the kernel's config checks on LLaMA-style shapes; the GPU default for large M is
    the first candidate whose tiles fill the device (132 SMs), else the one with the most tiles."""
    monkeypatch.setattr(qk, "interpreting", lambda: False)
    for M, K, N in ((2048, 2048, 5632), (2048, 5632, 2048), (300, 384, 40)):
        k = qk.QuantKernel(name="t", template="wq_gemm", source="", fn_name="f", args=[], grid=None,
                           shapes={"M": M, "N": N, "K": K, "group": group}, dtype=torch.bfloat16, scheme=scheme)
        cands = qk.large_m_configs(scheme, M, N, K, group)
        assert len(cands) >= 3 and len({json.dumps(c, sort_keys=True) for c in cands}) == len(cands)
        for c in cands:
            k.check_config(c)
            assert c["TRANS"] and c["SPLIT_K"] == 1 and c["BLOCK_M"] <= max(16, 2 ** (M - 1).bit_length())
            assert c.get("SCALE_W", False) == (group > 0) and (not group or c["BLOCK_K"] <= group)
        default = qk.default_config("wq_gemm", scheme, M, N, K, group)
        if M == 2048:  # 352 and 128 tiles of 256x128
            assert default == cands[0]
        else:  # 300 x 40: three 128x64 tiles rather than two 256-row ones
            assert default in cands and (default["BLOCK_M"], default["BLOCK_N"]) == (128, 64)
    assert qk.large_m_configs(scheme, 2048, 5632, 2048, group)[0]["BLOCK_M"] == 256


def test_sm90_code_of_the_large_m_kernels(tmp_path):
    """Compiled for sm_90 on the CPU: async wgmma with the weight tile as the register (RS) A operand, no ptxas
    serialization warning (C7515), no register spills, the activation tile through 16-byte async copies."""
    configs = [{"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8, "num_stages": 3, "TRANS": True,
                "SCALE_W": True}]
    out = tmp_path / "rows.json"
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "qgemm_ptx.py"), "--shape", "512x1024x1024",
                           "--json", str(out)] + [a for c in configs for a in ("--config", json.dumps(c))],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["scheme"] for r in rows] == ["int8_weight_only", "int4_weight_only"]
    for r in rows:
        assert r["wgmma"] == "RS" and r["async"] and not r["serial"], r
        assert r["spill_bytes"] == 0 and 128 < r["regs"] <= 255 and 0 < r["smem"] <= 227 * 1024, r
        assert r["ctas_per_sm"] == 1, r  # (more than 128 registers on 8 warps: one CTA's worth of an SM)
        assert r["loads"].get("cp.async 16B", 0) > 0 and r["mma_sync"] == 0, r
        # the main loop: 4 wgmma (m64n256k16) per 64-long chunk and a cheap dequantization (~240 instructions a
        # warp: issuing them on 8 warps takes about half the chunk's 1024 tensor-core cycles)
        assert r["sass_loop"]["ops"]["HGMMA"] == 4 and r["sass_loop"]["instrs"] < 300, r["sass_loop"]
    assert "HMUL2" in rows[1]["sass_loop"]["ops"]  # int4 with bf16 activations: w = (q - z) * s in bf16x2
    assert "wgmma RS async" in proc.stdout


def test_bf16_bit_pattern_dequantization_is_exact_then_rounded():
    """The GPU's int4 bf16 path (interpreted code takes the float32 one): bf16 bits 0x4300 | q are 128 + q, minus
    bf16(128 + z) gives q - z exactly, times bf16(s) is within bf16 rounding of the float32 (q - z) * s."""
    q, z = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    codes = (q.to(torch.int16) | 0x4300).view(torch.bfloat16)
    assert torch.equal(codes.float(), 128.0 + q.float())
    qz = codes - (z.float() + 128).to(torch.bfloat16)
    assert qz.dtype == torch.bfloat16 and torch.equal(qz.float(), (q - z).float())
    s = torch.rand(16, 16, generator=seeded(5)) * 0.1
    w = (qz * s.to(torch.bfloat16)).float()
    exact = (q - z).float() * s
    assert ((w - exact).abs() <= exact.abs() * 2 ** -7 + 1e-30).all()  # two roundings of 2^-9 each, at most


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:64"])
def test_compiled_model_runs_the_large_m_config_with_its_fused_epilogues(scheme):
    """What the schedule database (or the lead's default) would pick for prefill: a compiled block's qmatmul
    kernels (bias + SiLU fused into up's, the residual add into down's) set to the first large-M candidate,
    BACKEND "triton", against the quantized model's dequantized reference, twice."""
    import torch.nn as nn
    import torch.nn.functional as F

    import tilecraft

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(64, 128), nn.Linear(128, 64, bias=False)

        def forward(self, x):
            return x + self.down(F.silu(self.up(x)))

    torch.manual_seed(3)
    torch._dynamo.reset()
    c = tilecraft.compile(Block().eval(), quantize=scheme)
    x = torch.randn(2, 65, 64, generator=seeded(4))  # 130 rows
    with torch.no_grad():
        c(x)
        prog = c.report.graphs[0].program
        qks = [k for k in prog.kernels if k.template == "wq_gemm"]
        assert len(qks) == 2
        for k in qks:
            s = k.shapes
            k.config = {**qk.large_m_configs(k.scheme, s["M"], s["N"], s["K"], s["group"])[0], "BACKEND": "triton"}
            assert k.config["TRANS"] and k.config["BLOCK_M"] == 256
        for step in prog.steps:
            step.plan = None  # (launch plans are worked out again for the new configs)
        ref = c.model(x)
        for _ in range(2):
            assert_close(c(x), ref, msg=scheme)
    assert not [s.kernel.name for s in prog.steps if getattr(s, "failed", False)]
