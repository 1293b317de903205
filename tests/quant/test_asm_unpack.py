"""The int4 GEMM's ASM knob (bits.py `unpack8_pairs_asm`: codes to q - z pairs in inline PTX). The interpreter runs
no PTX, so: its bit logic emulated in numpy from the selectors and LUT written in its source, its join order
checked against the K order, and the sm_90 compile (PTX and SASS instruction count) in a fresh process."""
import json
import re

import numpy as np
import pytest
import torch

from tests.benches import ROOT, run_with_qgemm_ptx
from tilecraft.quant import QuantError, make_kernel

BITS = (ROOT / "tilecraft/quant/triton/bits.py").read_text()
ASM_SRC = BITS[BITS.index("def unpack8_pairs_asm"):BITS.index("def dequant8_pairs_asm")]


def _prmt(a: np.ndarray, b: np.ndarray, sel: int) -> np.ndarray:
    """PTX prmt.b32 (default mode): byte k of the result is byte (sel >> 4k) & 7 of {b, a} (a: bytes 0-3)."""
    pool = [(a >> (8 * j)) & 0xFF for j in range(4)] + [(b >> (8 * j)) & 0xFF for j in range(4)]
    out = np.zeros_like(a)
    for k in range(4):
        nib = (sel >> (4 * k)) & 0xF
        assert nib < 8, "sign-replicate selectors are not emulated"
        out |= pool[nib] << (8 * k)
    return out


def _lop3(a, b, c, lut: int):
    """PTX lop3.b32: result bit = LUT bit number (a << 2 | b << 1 | c) of the operands' bits (a=0xF0, b=0xCC,
    c=0xAA in the LUT's own terms)."""
    out = np.zeros_like(a)
    for bit in range(32):
        ia, ib, ic = (a >> bit) & 1, (b >> bit) & 1, (c >> bit) & 1
        out |= ((lut >> (ia * 4 + ib * 2 + ic)) & 1) << bit
    return out


def _halves(t: np.ndarray, dt) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.from_numpy((t & 0xFFFF).astype(np.uint16).view(np.int16)).view(dt)
    hi = torch.from_numpy(((t >> 16) & 0xFFFF).astype(np.uint16).view(np.int16)).view(dt)
    return lo, hi


@pytest.mark.parametrize("dt,base", [(torch.bfloat16, 0x4300), (torch.float16, 0x6400)])
def test_pair_logic_gives_q_minus_z_in_k_order(dt, base):
    sels = [int(x, 16) for x in re.findall(r"prmt\.b32 a, \$4, s, (0x[0-9A-Fa-f]+)", ASM_SRC)]
    luts = {int(x, 16) for x in re.findall(r"lop3\.b32 a, a, 0x000F000F, m, (0x[0-9A-Fa-f]+)", ASM_SRC)}
    assert len(sels) == 4 and len(luts) == 1 and "and.b32 m, $5, 0xFFF0FFF0" in ASM_SRC
    lut = luts.pop()
    rng = np.random.default_rng(0)
    R, W = 8, 4
    codes = rng.integers(0, 16, size=(R, 8 * W))
    z = rng.integers(0, 16, size=R)
    words = np.zeros((R, W), dtype=np.int64)
    for p in range(8):  # nibble p of word w holds code 8w + p (the stored int4 layout)
        words |= codes[:, p::8].astype(np.int64) << (4 * p)
    zz = ((base | z) * 0x10001).astype(np.int64)[:, None]
    s = words >> 4  # shr.b32 (logical: words are non-negative here)
    m = zz & 0xFFF0FFF0
    ts = []
    for sel in sels:
        a = _lop3(_prmt(words, s, sel), np.full_like(words, 0x000F000F), np.broadcast_to(m, words.shape), lut)
        lo, hi = _halves(a, dt)
        zlo, zhi = _halves(np.broadcast_to(zz, words.shape), dt)
        ts.append((lo.float() - zlo.float(), hi.float() - zhi.float()))  # sub.rn.*x2: exact (small integers)
    # the source's join order: lo = join(join(t0, t2), join(t1, t3)), hi likewise, then join(lo, hi)
    assert "lo = tl.join(tl.join(t0.to(tl.int16), t2.to(tl.int16)), tl.join(t1.to(tl.int16), t3.to(tl.int16)))" \
        in ASM_SRC and "tl.reshape(tl.join(lo, hi), (R, 8 * W))" in ASM_SRC
    lo = torch.stack([torch.stack([ts[0][0], ts[2][0]], -1), torch.stack([ts[1][0], ts[3][0]], -1)], -1)
    hi = torch.stack([torch.stack([ts[0][1], ts[2][1]], -1), torch.stack([ts[1][1], ts[3][1]], -1)], -1)
    got = torch.stack([lo, hi], -1).reshape(R, 8 * W)
    assert torch.equal(got, torch.from_numpy(codes - z[:, None]).float())


DQ_SRC = BITS[BITS.index("def dequant8_pairs_asm"):]


@pytest.mark.parametrize("dt,base", [(torch.bfloat16, 0x4300), (torch.float16, 0x6400)])
def test_dequantize_pairs_are_scaled_and_stored_in_k_order(dt, base):
    """dequant.py's ASM path (bits.py `dequant8_pairs_asm`): the pair logic above (same selectors, LUT and mask,
    read from its source), then per pair a packed subtract and a packed multiply by the scale rounded to dt; the
    four pair registers of a word joined into 32-bit words in K order. Equals (q - z) * dt(s), rounded to dt."""
    prmt = r"prmt\.b32 a, \$4, s, (0x[0-9A-Fa-f]+); lop3\.b32 a, a, 0x000F000F, m, (0x[0-9A-Fa-f]+)"
    assert re.findall(prmt, DQ_SRC) == re.findall(prmt, ASM_SRC) and "and.b32 m, $5, 0xFFF0FFF0" in DQ_SRC
    assert DQ_SRC.count('SUB + " a, a, $5; " + MUL + " $') == 4
    assert "tl.reshape(tl.join(tl.join(t0, t2), tl.join(t1, t3)), (R, 4 * W))" in DQ_SRC
    sels, lut = [int(a, 16) for a, _ in re.findall(prmt, DQ_SRC)], int(re.findall(prmt, DQ_SRC)[0][1], 16)
    rng = np.random.default_rng(1)
    R, W = 8, 4
    codes = rng.integers(0, 16, size=(R, 8 * W))
    z = rng.integers(0, 16, size=R)
    scale = torch.from_numpy(rng.uniform(1e-3, 2e-2, size=R)).float()
    words = np.zeros((R, W), dtype=np.int64)
    for p in range(8):
        words |= codes[:, p::8].astype(np.int64) << (4 * p)
    zz = np.broadcast_to(((base | z) * 0x10001).astype(np.int64)[:, None], words.shape)
    sd = scale.to(dt)
    pairs = []
    for sel in sels:
        a = _lop3(_prmt(words, words >> 4, sel), np.full_like(words, 0x000F000F), zz & 0xFFF0FFF0, lut)
        lo, hi = _halves(a, dt)
        zlo, zhi = _halves(zz, dt)
        # sub.rn (exact: small integers), then mul.rn: one rounding of the product in dt
        pairs.append(torch.stack([((lo.float() - zlo.float()) * sd[:, None].float()).to(dt),
                                  ((hi.float() - zhi.float()) * sd[:, None].float()).to(dt)], -1))
    t0, t1, t2, t3 = pairs  # [R, W, 2]: one 32-bit word each (low half first in memory)
    got = torch.stack([torch.stack([t0, t2], -2), torch.stack([t1, t3], -2)], -2)  # join(join(t0,t2), join(t1,t3))
    got = got.reshape(R, 8 * W)  # [R, W, j, k, half] -> the int32 word 4w + 2j + k, then its two halves
    want = ((torch.from_numpy(codes - z[:, None]).float()) * sd[:, None].float()).to(dt)
    assert torch.equal(got, want)


def test_asm_is_refused_in_the_interpreter_and_outside_the_int4_gemm():
    k4 = make_kernel("int4_weight_only", 16, 64, 128, torch.bfloat16, 32)
    cfg = {**k4.default_config(), "ASM": True}
    with pytest.raises(QuantError, match="ASM.*interpreter"):
        k4.check_config(cfg)
    k8 = make_kernel("int8_weight_only", 16, 64, 128, torch.bfloat16)
    with pytest.raises(QuantError, match="ASM"):
        k8.check_config({**k8.default_config(), "ASM": True})


SCRIPT = """
import json, torch
from tilecraft.quant.kernels import make_kernel
k = make_kernel("int4_weight_only", 16, 32000, 2048, torch.bfloat16, 128)
base = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 128, "SPLIT_K": 1, "num_warps": 2, "num_stages": 3, "TRANS": True,
        "SCALE_W": False}
rows = []
for asm in (False, True):
    ck = qgemm_ptx.compile_sm90(k, {**base, "ASM": asm})
    info = qgemm_ptx.ptxas_info(ck.asm["ptx"])
    rows.append({"ptx_sub": ck.asm["ptx"].count("sub.rn.bf16x2"), "loop": info["sass_loop"].get("instrs"),
                 "spill": info["spill_bytes"]})
print(json.dumps(rows))
"""


def test_asm_compiles_for_sm90_with_fewer_instructions_per_chunk():
    plain, asm = json.loads(run_with_qgemm_ptx(SCRIPT).strip().splitlines()[-1])
    assert plain["ptx_sub"] == 0 and asm["ptx_sub"] > 0 and asm["spill"] == 0
    assert asm["loop"] < 0.85 * plain["loop"], (plain, asm)  # 298 -> 224 with Triton 3.6's ptxas


DEQUANT_PTX = """
import collections
import triton
from pathlib import Path
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tilecraft.codegen.kernel import load_source
fn = load_source(Path("tilecraft/quant/triton/dequant.py").read_text(), "dequant_kernel")
sig = {"w_ptr": "*u8", "s_ptr": "*fp32", "z_ptr": "*u8", "out_ptr": "*bf16", "N": "i32", "K": "i32",
       **{k: "constexpr" for k in ("BITS", "GROUP", "BLOCK_N", "BLOCK_K", "ASM")}}
for asm in (False, True):
    consts = {"BITS": 4, "GROUP": 128, "BLOCK_N": 32, "BLOCK_K": 128, "ASM": asm}
    ptx = triton.compile(ASTSource(fn, sig, constexprs=consts, attrs={(i,): [["tt.divisibility", 16]] for i in range(6)}),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}).asm["ptx"]
    body = ptx[ptx.index(".entry"):]
    ops = [l.split()[0] for l in body.splitlines() if l.strip() and l.strip()[0].isalpha()]
    info = qgemm_ptx.ptxas_info(ptx)
    print(len(ops), body.count("mul.rn.bf16x2"), info["spill_bytes"], info["ptxas_ok"])
"""


def test_dequantize_asm_compiles_for_sm90():
    """dequant.py's ASM path for an int4 tile into bfloat16, compiled for sm_90 in a fresh process: packed
    multiplies, no spills, and well under the float32 path's instructions (PTX)."""
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        plain, asm = ([int(v) if v.isdigit() else v for v in line.split()]
                      for line in run_with_qgemm_ptx(DEQUANT_PTX).strip().splitlines())
    finally:
        os.chdir(cwd)
    assert plain[1] == 0 and asm[1] > 0, (plain, asm)
    assert plain[2:] == asm[2:] == [0, "True"], (plain, asm)
    assert asm[0] < 0.6 * plain[0], (plain, asm)


def test_asm_needs_packed_bf16_below_sm90_it_is_off(monkeypatch):
    """Packed bf16 subtract/multiply exist from sm_90: on an older GPU the int4 decode default leaves ASM off and a
    config asking for it with bf16 activations is refused (float16 keeps it: f16x2 arithmetic is older)."""
    from tilecraft.quant import kernels as qk

    monkeypatch.setattr(qk, "interpreting", lambda: False)
    monkeypatch.setattr(qk, "_KERNELS", {})  # (kernels made here carry GPU defaults: not for other tests)
    assert qk.default_config("wq_gemm", "int4_weight_only", 16, 2048, 2048, 128)["ASM"]
    monkeypatch.setattr(qk, "packed_bf16_ok", lambda: False)
    assert not qk.default_config("wq_gemm", "int4_weight_only", 16, 2048, 2048, 128)["ASM"]
    k = make_kernel("int4_weight_only", 16, 64, 128, torch.bfloat16, 32)
    with pytest.raises(QuantError, match="sm_90"):
        k.check_config({**k.default_config(), "ASM": True})
    make_kernel("int4_weight_only", 16, 64, 128, torch.float16, 32).check_config({**k.default_config(), "ASM": True})
