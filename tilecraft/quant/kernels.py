"""Quantized-linear kernels as tunable `Kernel` objects ("wq_gemv" for M=1 decode, "wq_gemm" for M >= 2: thin tiles
for decode batches, wide for prefill; "fp8_gemm"),
and `run_quantized_linear`, the one call a runtime needs to execute a quantized-linear IR node.

Knobs: BLOCK_N, BLOCK_K, SPLIT_K, num_warps, num_stages (+ BLOCK_M for the GEMMs; TRANS and, for int4,
SCALE_W for wq_gemm; BACKEND for codegen's fused qmatmul kernels). `shapes` is {"M", "N", "K", "group"}.
With SPLIT_K > 1 the GEMM reduces its splits inside the kernel (`split_workspace`); the GEMV and the fp8 GEMM
accumulate atomically into a zeroed float32 workspace and cast.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton

from ..codegen.kernel import ArgSpec, Kernel, interpreting, pdl_active
from ..ir.types import next_pow2 as _pow2
from .formats import QuantError

log = logging.getLogger("tilecraft")

SRC_DIR = Path(__file__).parent / "triton"
GEMV_MAX_M = 1  # M=1 decode uses the GEMV template by default; 2 <= M <= 16 the thin-tile GEMM (measured faster)
BITS = {"int8_weight_only": 8, "int4_weight_only": 4}
FN_NAMES = {"wq_gemv": "wq_gemv_kernel", "wq_gemm": "wq_gemm_kernel", "fp8_gemm": "fp8_gemm_kernel"}


def _clamp_pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, _pow2(n)))


@dataclass
class QuantKernel(Kernel):
    """A Kernel whose launch also passes problem sizes and flags (`extra`) to a static Triton source."""

    extra: dict = field(default_factory=dict)  # M, N, K, strides and constexpr flags (BITS, GROUP, ...)
    scheme: str = ""
    _workspaces: dict = field(default_factory=dict, repr=False)  # split-K scratch (see split_workspace)
    aten: object = None  # codegen's plan for config BACKEND "aten" (dequantize, then cuBLAS), if it has one

    @property
    def key(self) -> str:
        flags = {k: v for k, v in self.extra.items() if k not in ("M", "N", "K", "stride_xm", "stride_om")}
        text = f"{self.template}\n{self.scheme}\n{sorted(flags.items())}\n{self.source}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def check_config(self, config: dict) -> None:
        """Raise QuantError naming the knob when a config cannot run this kernel."""
        if config.get("BACKEND", "triton") not in ("triton", "aten") or (
                config.get("BACKEND") == "aten" and self.aten is None):
            raise QuantError(f"{self.name}: BACKEND={config.get('BACKEND')!r}: this kernel runs 'triton'"
                             + (" or 'aten'" if self.aten is not None else ""))
        bk, group = config.get("BLOCK_K", 0), self.shapes.get("group", 0)
        for knob in ("BLOCK_N", "BLOCK_K") + (("BLOCK_M",) if self.template != "wq_gemv" else ()):
            v = config.get(knob)
            if not isinstance(v, int) or v <= 0 or v & (v - 1):
                raise QuantError(f"{self.name}: {knob}={v!r} must be a positive power of two")
        if self.scheme == "int4_weight_only":
            if bk < 2:
                raise QuantError(f"{self.name}: int4 needs BLOCK_K >= 2 (two values per byte), got {bk}")
            if self.template == "wq_gemm" and bk > group and not (config.get("SCALE_W") and
                                                                self.shapes["K"] % bk == 0):
                raise QuantError(f"{self.name}: int4 GEMM needs 16 <= BLOCK_K <= group size {group}, or SCALE_W "
                                 f"with BLOCK_K dividing K={self.shapes['K']} (several groups per chunk); "
                                 f"got BLOCK_K={bk}")
            if self.template == "wq_gemv" and max(bk, group) % min(bk, group):
                raise QuantError(f"{self.name}: BLOCK_K={bk} and group size {group} must divide one another")
        tile = self.info.get("block_n_multiple")  # (an epilogue writing sums over whole tile-column pieces)
        if tile and config.get("BLOCK_N", 0) % tile:
            raise QuantError(f"{self.name}: its epilogue sums whole {tile}-column pieces: BLOCK_N must be a "
                             f"multiple of {tile}, got {config.get('BLOCK_N')}")
        if self.info.get("fused") and self.template != "wq_gemm" and config.get("SPLIT_K", 1) != 1:
            raise QuantError(f"{self.name}: a fused epilogue needs whole sums: SPLIT_K=1 (only the GEMM reduces "
                             f"its splits before the epilogue), got SPLIT_K={config.get('SPLIT_K')}")
        if config.get("ASM") and (self.scheme != "int4_weight_only" or self.template != "wq_gemm" or interpreting()):
            raise QuantError(f"{self.name}: ASM (int4 codes to 16-bit pairs in inline PTX) is an int4 GEMM knob "
                             f"for a CUDA GPU" + (" (the Triton interpreter runs no PTX)" if interpreting() else ""))
        if config.get("ASM") and self.dtype == torch.bfloat16 and not packed_bf16_ok():
            raise QuantError(f"{self.name}: ASM with bfloat16 activations needs packed bf16 arithmetic (sm_90+)")
        if config.get("TRANS") and self.template != "wq_gemm":
            raise QuantError(f"{self.name}: TRANS (the weight tile as the left dot operand) is a GEMM knob")
        if config.get("SCALE_W") and (self.scheme != "int4_weight_only" or self.template != "wq_gemm"):
            raise QuantError(f"{self.name}: SCALE_W (scale the weight tile before the dot) is an int4 GEMM knob")
        rope = self.extra.get("ROPE", 0) or config.get("ROPE", 0)
        if rope and config.get("BLOCK_N", 0) > 2 * rope:
            raise QuantError(f"{self.name}: RoPE in the epilogue pairs columns within a head of {2 * rope}: BLOCK_N "
                             f"must be at most that, got {config.get('BLOCK_N')}")
        if self.template != "wq_gemv" and (config.get("BLOCK_M", 0) < 16 or config.get("BLOCK_N", 0) < 16
                                           or bk < (32 if self.scheme == "fp8" else 16)):
            raise QuantError(f"{self.name}: tl.dot needs BLOCK_M, BLOCK_N >= 16 and BLOCK_K >= 16 (32 for fp8)")

    def make_plan(self, config: dict) -> tuple:
        """The config checked once, and the problem's sizes and flags (`extra`) added to its constexprs."""
        self.check_config(config)
        consts, opts, grid = super().make_plan({k: v for k, v in config.items() if k != "BACKEND"})
        return {**self.extra, **consts}, {} if interpreting() else opts, grid

    def launch(self, args: list[torch.Tensor], config: dict | None = None) -> None:
        config = self.config if config is None else config
        if config.get("BACKEND") == "aten" and self.aten is not None:  # no Triton plan to look up
            self.aten.run(args)
            return
        kwargs, opts, grid = self.plan(config)  # checks the config (an "aten" one without a plan raises here)
        out = args[-1]
        split = config.get("SPLIT_K", 1)
        serial = self.template == "wq_gemm"  # reduces its splits in the kernel (wq_gemm.py); others use atomics
        target = torch.zeros(out.shape, dtype=torch.float32, device=out.device) if split > 1 and not serial else out
        stride_om = target.stride(-2) if target.dim() > 1 else 0  # (a fused epilogue stores by its own strides)
        kwargs = {**kwargs, "stride_om": stride_om}
        if serial:
            kwargs["ws_ptr"], kwargs["cnt_ptr"] = self.split_workspace(config, grid, out.device)
        self._fast.launch(self.fn, grid, [*args[:-1], target], kwargs, opts)
        if split > 1 and not serial:
            out.copy_(target)

    def split_workspace(self, config: dict, grid: tuple, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp32 partial tiles, int32 arrival counters) of the GEMM's serial split-K, made once per grid, tile and
        device: the counters start at zero and the last split of each tile resets its own. One launch at a time
        per kernel object (the same stream), as the runtime launches."""
        split = config.get("SPLIT_K", 1)
        key = (str(device), grid, config.get("BLOCK_M"), config.get("BLOCK_N"))
        ws = self._workspaces.get(key) if split > 1 else None
        if ws is None and split > 1:
            tiles = grid[0]
            ws = self._workspaces[key] = (
                torch.empty(split * tiles * config["BLOCK_M"] * config["BLOCK_N"], dtype=torch.float32,
                            device=device), torch.zeros(tiles, dtype=torch.int32, device=device))
        return ws or (_placeholder(device, torch.float32), _placeholder(device, torch.int32))

    def __getstate__(self):  # workspaces stay in this process
        return {**super().__getstate__(), "_workspaces": {}, "aten": None}


_DEQUANT: list = []  # the dequantize kernel's jitted function, loaded once
_SCRATCH: dict = {}  # (device, dtype) -> the largest dequantized-weight buffer so far (see dequantize_into)
_KEEP: list = []  # buffers a larger one replaced: a captured CUDA graph may still write them


# (BLOCK_N, BLOCK_K) on a GPU: measured best on an H200 (2048x5632 and 5632x2048, cold: int8 8.3 us for a
# floor of 8.1; int4 7.4-7.6 for 6.8; `bash bench/run_gpu.sh OUT llamaquant`)
DEQUANT_TILES = {"int8_weight_only": (64, 128), "int4_weight_only": (32, 128)}
DEQUANT_ASM = os.environ.get("TILECRAFT_DEQUANT_ASM", "0") == "1"  # int4: dequant.py's inline-PTX path


def dequantize_into(scheme: str, qweight, scales, zeros, group: int, dtype: torch.dtype,
                    tiles: tuple[int, int] | None = None, warps: int = 4, asm: bool | None = None) -> torch.Tensor:
    """The weight [N, K] dequantized in `dtype` by one Triton kernel, into a scratch buffer shared by every
    quantized matmul of that device and dtype (they run one after another on one stream), so the float weights
    never all exist at once. Valid until the next call. `tiles`: (BLOCK_N, BLOCK_K) instead of DEQUANT_TILES
    (int4: BLOCK_K is capped at the group size), on `warps` warps. `asm`: int4 into a 16-bit float through
    the kernel's inline-PTX path (dequant.py ASM; default DEQUANT_ASM; never when interpreting, nor for bf16
    below sm_90)."""
    from ..codegen.kernel import load_source

    N = qweight.shape[0]
    K = qweight.shape[1] * (2 if scheme == "int4_weight_only" else 1)
    key = (str(qweight.device), dtype)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < N * K:
        if buf is not None:
            _KEEP.append(buf)
        buf = _SCRATCH[key] = torch.empty(N * K, dtype=dtype, device=qweight.device)
    out = buf[:N * K].view(N, K)
    if not _DEQUANT:
        _DEQUANT.append(load_source((SRC_DIR / "dequant.py").read_text(), "dequant_kernel"))
    bn, bk = tiles or ((16, 32) if interpreting() else DEQUANT_TILES[scheme])
    if scheme == "int4_weight_only":
        bk = min(bk, group)  # a tile inside one group (group sizes are powers of two, see formats.py)
    z = zeros if zeros is not None else scales
    asm = (DEQUANT_ASM if asm is None else asm) and scheme == "int4_weight_only" and not interpreting() and (
        dtype == torch.float16 or (dtype == torch.bfloat16 and packed_bf16_ok()))
    _DEQUANT[0][(triton.cdiv(N, bn), triton.cdiv(K, bk))](
        qweight, scales, z, out, N, K, BITS=BITS[scheme], GROUP=max(group, 1), BLOCK_N=bn, BLOCK_K=bk, ASM=asm,
        **({} if interpreting() else {"num_warps": warps}))
    return out


# float weight bytes per block of rows in dequant_matmul (0: the whole weight at once); TILECRAFT_DEQUANT_CHUNK_MB
DEQUANT_CHUNK_BYTES = int(float(os.environ.get("TILECRAFT_DEQUANT_CHUNK_MB", "0")) * 2**20)


# the CUTLASS mixed-input GEMM (tilecraft/quant/cutlass) instead of dequantize + cuBLAS, where it can run (sm_90,
# nvcc, the nvidia-cutlass headers): TILECRAFT_QMATMUL_CUTLASS=auto (default; each scheme's measured variant),
# a variant name, or 0 (off)
CUTLASS = os.environ.get("TILECRAFT_QMATMUL_CUTLASS", "auto").strip()
_PACKED: dict = {}  # repacked weights of callers that pass no cache of their own (see cutlass_matmul)
_CUTLASS_OFF: list = []  # the error that turned the CUTLASS path off in this process


@functools.cache
def _cutlass_available() -> bool:
    """Can the CUTLASS mixed-input GEMM run here (sm_90, nvcc, the CUTLASS headers)? Asked once; why not is
    logged once."""
    from . import cutlass as tc

    if tc.available():
        return True
    log.info("tilecraft: quantized prefill matmuls dequantize and call cuBLAS (the CUTLASS mixed-input GEMM needs "
             "an sm_90 GPU, nvcc and the CUTLASS headers: pip install nvidia-cutlass)")
    return False


def cutlass_matmul(scheme: str, x2, qweight, scales, zeros, group: int, bias, out, residual, cache=None):
    """x2 @ W.t() (+ residual) into `out` through the CUTLASS mixed-input GEMM, reading the quantized weight (repacked
    once into the kernel's layout, kept in `cache`: the caller's dict, one entry per weight address; a caller
    without one shares a process-wide one; the scheme's library is built on first use, see cutlass.build); None
    where it does not apply (off, not available, not CUDA bf16, a bias, operands its tiles cannot take) or after a
    failure, which is logged once and turns the path off."""
    if CUTLASS == "0" or _CUTLASS_OFF or bias is not None or not x2.is_cuda or x2.dtype != torch.bfloat16:
        return None
    if not x2.is_contiguous() or not out.is_contiguous() or (residual is not None and not residual.is_contiguous()):
        return None  # (dense operands)
    if not _cutlass_available():
        return None
    from . import cutlass as tc

    if not tc.fits(qweight.shape[0], x2.shape[1], group if scheme == "int4_weight_only" else 0):
        return None
    try:
        cache = _PACKED if cache is None else cache
        key = (qweight.data_ptr(), tuple(qweight.shape), tuple(qweight.stride()), scales.data_ptr())
        hit = cache.get(key)
        if hit is None or hit[1] != qweight._version:
            packed = tc.repack_int4(qweight, scales, zeros, group) if scheme == "int4_weight_only" else \
                tc.repack_int8(qweight, scales)
            # (the weight's storage is held while its repacked copy is: its address cannot be reused meanwhile)
            hit = cache[key] = (qweight.untyped_storage(), qweight._version, packed)
        return tc.mixed_gemm(scheme, x2, hit[2], out=out, residual=residual)
    except Exception as e:  # noqa: BLE001 - nvcc failed, a refused shape: dequantize + cuBLAS from now on
        _CUTLASS_OFF.append(str(e))
        log.warning("tilecraft: the CUTLASS mixed-input GEMM failed (%s); quantized prefill matmuls dequantize and "
                    "call cuBLAS", e)
        return None


def dequant_matmul(scheme: str, x2, qweight, scales, zeros, group: int, bias=None, out=None, residual=None,
                   chunk_bytes: int | None = None, cache: dict | None = None) -> torch.Tensor:
    """x2 [M, K] @ dequantize(w).t() (+ bias, or + residual: cuBLAS's added operand) into out [M, N] (made when
    None; out may be residual's own buffer: then in place): the quantized matmul's "aten" backend. With
    `chunk_bytes` (default DEQUANT_CHUNK_BYTES) the weight goes in blocks of rows whose float copy is about
    that size, each dequantized and multiplied into its columns of out, so the dequantized block can still be
    in L2 when cuBLAS reads it (instead of a whole float weight written to DRAM and read back). Where it can run,
    CUTLASS's mixed-input GEMM instead (`cutlass_matmul`; `cache` keeps the repacked weights)."""
    N = qweight.shape[0]
    K = x2.shape[1]
    if out is None:
        out = torch.empty(x2.shape[0], N, dtype=x2.dtype, device=x2.device)
    if cutlass_matmul(scheme, x2, qweight, scales, zeros, group, bias, out, residual, cache) is not None:
        return out  # (where it can run: CUTLASS's mixed-input GEMM, the float weight never written)
    chunk = DEQUANT_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    rows = N if not chunk else max(256, chunk // (K * x2.element_size()) // 256 * 256)
    inplace = residual is not None and residual.data_ptr() == out.data_ptr() and residual.stride() == out.stride()
    for n0 in range(0, N, rows):
        n1 = min(N, n0 + rows)
        wd = dequantize_into(scheme, qweight[n0:n1], scales[n0:n1], None if zeros is None else zeros[n0:n1], group,
                             x2.dtype).t()
        o = out if rows >= N else out[:, n0:n1]
        if residual is not None:
            if inplace:
                o.addmm_(x2, wd)
            else:
                torch.addmm(residual if rows >= N else residual[:, n0:n1], x2, wd, out=o)
        elif bias is not None:
            torch.addmm(bias[n0:n1], x2, wd, out=o)
        else:
            torch.mm(x2, wd, out=o)
    return out


def default_config(template: str, scheme: str, M: int, N: int, K: int, group: int) -> dict:
    """Heuristic config: the best points of bench/quant_linear.py on an H100 (cold-L2 GPU time, K=4096 and
    N=4096/11008; smaller tiles when interpreting). GEMV (M=1): 2 rows x 2048 K for int8 and 8 x 2048 for int4
    (thousands of programs, each streaming 4-8 KB per step). M <= 16: measured on an H200 (below). GEMMs at
    16 < M <= 64, not measured yet in this form (set them from bench/quant_linear.py), put the weight tile on
    the dot's left (TRANS) with 64-wide N tiles, 256/128-long K chunks and split-K to about two programs per
    SM; larger M is a bf16 wgmma GEMM with the weight tile on the left (large_m_configs). int4 applies the
    group scales to the weight tile (SCALE_W), so a chunk can span groups."""
    small = interpreting()
    if template == "wq_gemv":
        bm = _pow2(M)
        if small:
            bn, bk = _clamp_pow2(N, 8, 32), _clamp_pow2(min(K, 2048 // (bm * 8)), 16, 64)
        elif bm == 1:
            bn, bk = (8 if scheme == "int4_weight_only" else 2), _clamp_pow2(K, 64, 2048)
        else:  # rows of x one at a time against a [BLOCK_N, BLOCK_K] tile
            bn = 16
            bk = _clamp_pow2(min(K, 8192 // (bm * bn)), 16, 512)
            if scheme == "int4_weight_only":  # half the bytes per value: twice int8's chunk
                bk = min(2 * bk, _clamp_pow2(K, 16, 4096))
        if scheme == "int4_weight_only":
            bk = max(2, bk if bk <= group else (bk // group) * group)
        stages = 1 if small or (bm == 1 and scheme != "int4_weight_only") else 2 if bm == 1 else 3
        return {"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": 4, "num_stages": stages}
    if small:
        bm, bn = _clamp_pow2(M, 16, 32), _clamp_pow2(N, 16, 32)
        bk = min(group, 32) if scheme == "int4_weight_only" else 32
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": 4, "num_stages": 1,
                **({"TRANS": M <= 64} if scheme != "fp8" else {})}
    bm = _clamp_pow2(M, 16, 64)
    if scheme == "fp8":
        return {"BLOCK_M": bm, "BLOCK_N": _clamp_pow2(N, 16, 64 if M <= 64 else 128), "BLOCK_K": 128,
                "SPLIT_K": 1, "num_warps": 4, "num_stages": 4}
    if M <= 16:  # decode batches, int8 and int4 alike: thin N tiles, K split 4 ways (reduced in the kernel) while
        # the N tiles alone would not fill the device twice. Measured best, cold weights, on an H200 at M=16 for
        # LLaMA-492M's weights (`bash bench/run_gpu.sh OUT llamaquant`, 2026-12-02): 2048x2048 5.2/5.3 us
        # (int8/int4), 2048x512 3.8/4.2, 5632x2048 7.9/9.7, 2048x5632 -/10.2, 2048x32000 (no split) 23.3/33.2;
        # cuBLAS bf16 5.6, 5.3, 10.2, 7.8, 34.2 us. (H100, 4096x4096: 16x32x256 without split, 10.8 us.)
        bk = _clamp_pow2(K, 16, 256)
        bn = _clamp_pow2(N, 16, 32)
        split = 4 if triton.cdiv(N, bn) < 2 * _sm_count() and K >= 8 * bk else 1
        cfg = {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "num_warps": 4, "num_stages": 3,
               "TRANS": False}
        if scheme == "int8_weight_only" and triton.cdiv(N, 32) >= 4 * _sm_count():  # wide weights: the weight
            # tile on the dot's left, 2 warps (H200, cold, M=16, bench/q4_decode_sweep.py --scheme int8,
            # 2026-12-03: 2048x32000 24.2 -> 20.6 us; the other LLaMA shapes' best were the rule above, +-0.2)
            cfg.update(BLOCK_N=64, BLOCK_K=128, SPLIT_K=1, TRANS=True, num_warps=2, num_stages=4)
        if scheme == "int4_weight_only":  # one group per chunk, its scale on the dot's result; the codes
            # become q - z pairs in inline PTX (ASM, wq_gemm.py), the weight tile on the dot's left (TRANS) on 2
            # warps (more programs per SM: the decode GEMMs are instruction- and latency-bound). Cold-ranked
            # sweeps on an H200 at M=16 (bench/q4_decode_sweep.py, 2026-12-03, fourth session: 144 configs per
            # shape with ASM; before: ~400 without it): 2048x3072 5.9 -> 5.5 us, 2048x2048 5.2 -> 4.8, 5632x2048
            # (split 8) 8.1 -> 7.4, 2048x11264 (split 2) 11.1 -> 9.3, 2048x32000 (no split) 20.6 -> 17.2; a
            # second sweep (140 configs: BLOCK_N 16-128, 1-2 warps, split 1-16, 2-5 stages) found no better
            # point. (The interpreter returned above: ASM is GPU-only; float32 activations ignore it; below sm_90
            # ASM is off, bf16 has no packed subtract there.)
            bk = min(128, group)
            cfg.update(BLOCK_K=bk, SCALE_W=False, SPLIT_K=max(1, min(8, K // (4 * bk))), TRANS=True, num_warps=2,
                       num_stages=4, ASM=packed_bf16_ok())
            tiles = triton.cdiv(N, 32)
            if tiles >= 4 * _sm_count():
                cfg.update(SPLIT_K=1, num_stages=3)
            elif tiles >= 2 * _sm_count():
                cfg.update(SPLIT_K=min(2, cfg["SPLIT_K"]), num_stages=3)
        return cfg
    if M <= 64:  # memory-bound: the weight tile is the dot's left operand (TRANS) and the wide dimension; K is
        # split (reduced in the kernel) until there are about two programs per SM
        bk = _clamp_pow2(K, 16, 256 if M <= 16 else 128)
        bn = _clamp_pow2(N, 16, 64)
        tiles = triton.cdiv(M, bm) * triton.cdiv(N, bn)
        split = 1
        while tiles * split < 2 * _sm_count() and split < (4 if M <= 16 else 2) and K >= 2 * split * bk:
            split *= 2
        # (8 warps when the dequantized tile is 64 x 256: about 64 weights per thread, no register spills)
        cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split,
               "num_warps": 8 if bn * bk > 64 * 128 else 4, "num_stages": 3, "TRANS": True}
    else:  # compute-bound: a bf16 wgmma GEMM on weight tiles dequantized in registers (large_m_configs)
        # the first candidate whose tiles fill the device (90% of the SMs), else the one with the most tiles
        cands = large_m_configs(scheme, M, N, K, group)
        tiles = [triton.cdiv(M, c["BLOCK_M"]) * triton.cdiv(N, c["BLOCK_N"]) for c in cands]
        full = [c for c, t in zip(cands, tiles) if t >= 0.9 * _sm_count()]
        return dict(full[0] if full else cands[tiles.index(max(tiles))])
    if scheme == "int4_weight_only":  # group scales on the weight tile: the dot accumulates in place
        if cfg["BLOCK_K"] > group and K % cfg["BLOCK_K"]:
            cfg["BLOCK_K"] = group
        cfg["SCALE_W"] = True
    return cfg


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) for M >= 256, TRANS: the weight tile (BLOCK_N rows) is
# wgmma's M side with its A operand in registers, the activation rows (BLOCK_M) its N side (up to 256). Timed on
# an H200 at M=2048 (bench/quant_linear.py --large-m, 2026-12-03): int8 best 256x128x64 (1.24-1.46x cuBLAS
# bf16), int4 best 256x64x64 on 4 warps (1.55-1.74x); dequantize + cuBLAS (1.13-1.18x) stays the compiled
# default from M=256 (codegen/qmatmul.py ATEN_MIN_M). On sm_90 (bench/qgemm_ptx.py, 2048x5632x2048) all
# compile to async register-A wgmma without spills; per 64-long K chunk the warps issue ~240 (256-row tiles) to
# ~440 SASS instructions, i.e. 0.47-0.5 of the chunk's tensor-core time for 256-row activation tiles and ~0.9-1.05
# for 128-row ones (there the dequantization, not the tensor cores, sets the pace). 256x128: 1 CTA per SM
# (~210-230 registers); 256x64 on 4 warps: 2 CTAs per SM (one's epilogue overlaps the other's loop);
# 128x128 int8: 2 CTAs per SM (120 registers).
LARGE_M_TILES = [(256, 128, 64, 8, 3), (256, 128, 64, 8, 4), (256, 64, 64, 4, 3), (128, 256, 64, 8, 3),
                 (128, 128, 64, 8, 4)]


def large_m_configs(scheme: str, M: int, N: int, K: int, group: int) -> list[dict]:
    """Candidate wq_gemm configs for large M (compute-bound): bf16 wgmma on weight tiles dequantized in
    registers (see wq_gemm.py). int4 chunks stay inside one group (BLOCK_K <= group) and scale the weight tile
    (SCALE_W). Smaller problems get their tiles clamped; duplicates are dropped."""
    out = []
    for bm, bn, bk, w, st in LARGE_M_TILES:
        bm, bn = min(bm, _clamp_pow2(M, 16, 256)), min(bn, _clamp_pow2(N, 16, 256))
        if scheme == "int4_weight_only":
            bk = min(bk, group)
        cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": st,
               "TRANS": True, **({"SCALE_W": True} if scheme == "int4_weight_only" else {})}
        if cfg not in out:
            out.append(cfg)
    return out


@functools.cache
def _sm_count() -> int:
    """Streaming multiprocessors of the current GPU (132 on an H100/H200 when there is none)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    return 132


@functools.cache
def packed_bf16_ok() -> bool:
    """Does the current GPU have packed bfloat16 add/sub/mul (PTX `sub.rn.bf16x2`, `mul.rn.bf16x2`: sm_90+), which
    the int4 ASM paths use for bf16 activations? (True when there is no GPU: configs are then for an H100/H200.)"""
    return not torch.cuda.is_available() or torch.cuda.get_device_capability() >= (9, 0)


def config_space(template: str, scheme: str, group: int) -> dict[str, list]:
    """Candidate values per knob (for the tuner and the bench sweep); check_config filters invalid points."""
    if template == "wq_gemv":
        return {"BLOCK_N": [2, 4, 8, 16, 32, 64], "BLOCK_K": [64, 128, 256, 512, 1024, 2048, 4096],
                "SPLIT_K": [1, 2, 4, 8], "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3, 4]}
    bks = [32, 64, 128, 256, 512]  # int4: above the group size only with SCALE_W (check_config)
    space = {"BLOCK_M": [16, 32, 64, 128, 256], "BLOCK_N": [32, 64, 128, 256], "BLOCK_K": bks,
             "SPLIT_K": [1, 2, 4, 8], "num_warps": [4, 8], "num_stages": [2, 3, 4, 5]}
    if template == "wq_gemm":
        space["TRANS"] = [False, True]  # the weight tile as the left or the right dot operand
    if scheme == "int4_weight_only":
        space["SCALE_W"] = [False, True]  # group scale on the dot's result (exact) or on the weight tile
        if template == "wq_gemm":
            space["ASM"] = [False, True]  # codes to (q - z) pairs in inline PTX (wq_gemm.py; GPU only)
    return space


def choose_template(scheme: str, M: int) -> str:
    if scheme == "fp8":
        return "fp8_gemm"
    return "wq_gemv" if M <= GEMV_MAX_M else "wq_gemm"


_KERNELS: dict[tuple, QuantKernel] = {}


def make_kernel(scheme: str, M: int, N: int, K: int, dtype: torch.dtype, group: int = 0, has_bias: bool = False,
                template: str | None = None, stride_xm: int | None = None,
                fp8_per_row: tuple[bool, bool] = (True, True)) -> QuantKernel:
    """The kernel for one quantized-linear problem (memoized). Args: x [M,K], qweight, scales, zeros, bias, out."""
    template = template or choose_template(scheme, M)
    if template not in FN_NAMES or (template == "fp8_gemm") != (scheme == "fp8"):
        raise QuantError(f"no {template!r} kernel for scheme {scheme!r}")
    stride_xm = K if stride_xm is None else stride_xm
    key = (scheme, template, M, N, K, dtype, group, has_bias, stride_xm, fp8_per_row)
    k = _KERNELS.get(key)
    if k is not None:
        return k
    source = (SRC_DIR / f"{template}.py").read_text()
    if scheme == "int8_weight_only":
        w, s, z = ArgSpec((N, K), (K, 1), torch.int8), ArgSpec((N,), (1,), torch.float32), ArgSpec(
            (1,), (1,), torch.uint8)
    elif scheme == "int4_weight_only":
        w = ArgSpec((N, K // 2), (K // 2, 1), torch.uint8)
        s = ArgSpec((N, K // group), (K // group, 1), torch.float32)
        z = ArgSpec((N, K // group), (K // group, 1), torch.uint8)
    else:
        w = ArgSpec((N, K), (K, 1), torch.float8_e4m3fn)
        s = ArgSpec((N if fp8_per_row[1] else 1,), (1,), torch.float32)
        z = ArgSpec((M if fp8_per_row[0] else 1,), (1,), torch.float32)  # the activation scales
    x_dtype = torch.float8_e4m3fn if scheme == "fp8" else dtype
    args = [ArgSpec((M, K), (stride_xm, 1), x_dtype), w, s, z,
            ArgSpec((N,) if has_bias else (1,), (1,), dtype), ArgSpec((M, N), (N, 1), dtype, is_output=True)]
    extra = {"M": M, "N": N, "K": K, "stride_xm": stride_xm, "HAS_BIAS": has_bias}
    if scheme == "fp8":
        extra.update(X_PER_ROW=fp8_per_row[0], W_PER_ROW=fp8_per_row[1])
        args[2], args[3] = args[3], args[2]  # kernel order: x, w, x_scales, w_scales
    else:
        extra.update(BITS=BITS[scheme], GROUP=max(group, 1))
    if template == "wq_gemv":
        extra["BLOCK_M"] = _pow2(M)
        grid = lambda c: (triton.cdiv(N, c["BLOCK_N"]), c.get("SPLIT_K", 1))  # noqa: E731
    else:
        grid = lambda c: (triton.cdiv(M, c["BLOCK_M"]) * triton.cdiv(N, c["BLOCK_N"]), c.get("SPLIT_K", 1))  # noqa
    if template == "wq_gemm":
        extra["DOT_F32"] = dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())
        extra["IEEE"] = dtype == torch.float32
        extra["SCALE_W"] = False  # int4: a config may set it (see wq_gemm.py)
        extra["TRANS"] = False  # a config may set it (see wq_gemm.py)
        extra["ASM"] = False  # int4: a config may set it (see wq_gemm.py)
        extra["PREFETCH"] = pdl_active()  # the weights asked into L2 before the PDL wait (see wq_gemm.py)
        extra["PAIR"] = False  # codegen's fused kernel of a `pair` node sets it (see wq_gemm.py)
        extra["ROPE"] = 0  # codegen's fused kernel of a `rope` linear sets it (see wq_gemm.py)
    cfg = default_config(template, scheme, M, N, K, group)
    name = f"{template}_{scheme.split('_')[0]}_{M}x{N}x{K}" + (f"_g{group}" if group else "")
    k = QuantKernel(name=name, template=template, source=source, fn_name=FN_NAMES[template], args=args, grid=grid,
                    shapes={"M": M, "N": N, "K": K, "group": group}, dtype=dtype, config=dict(cfg), default=cfg,
                    info={"space": config_space(template, scheme, group), "scheme": scheme}, extra=extra,
                    scheme=scheme)
    _KERNELS[key] = k
    return k


def check_fp8_device(device: torch.device | str) -> None:
    """fp8 kernels need Hopper (sm_90+); say so clearly anywhere else."""
    device = torch.device(device)
    if device.type != "cuda":
        where = "the Triton interpreter on CPU" if interpreting() else "CPU"
        raise QuantError(f"fp8 quantization needs a CUDA GPU with compute capability >= 9.0 (Hopper); "
                         f"this tensor is on {device} ({where}). Use int8_weight_only or int4_weight_only here")
    cap = torch.cuda.get_device_capability(device)
    if cap < (9, 0):
        raise QuantError(f"fp8 quantization needs compute capability >= 9.0 (Hopper); "
                         f"{torch.cuda.get_device_name(device)} has {cap[0]}.{cap[1]}")


def run_quantized_linear(op: str, inputs: list, attrs: dict, config: dict | None = None,
                         template: str | None = None) -> torch.Tensor:
    """Run one quantized-linear IR node with the Triton kernels.

    op: "wq_linear_int8" (inputs x, qweight, scales, bias), "wq_linear_int4" (x, qweight, scales, zeros, bias;
    attrs group_size) or "fp8_linear" (x, qweight, scales, bias; attrs act_per_row). x may have any leading dims.
    config: a tuned config for the kernel (None: its heuristic default)."""
    from .formats import quantize_fp8_activation

    x = inputs[0]
    if op == "wq_linear_int4":
        _, qweight, scales, zeros, bias = inputs
        scheme, group, N, K = "int4_weight_only", int(attrs["group_size"]), qweight.shape[0], qweight.shape[1] * 2
    else:
        _, qweight, scales, bias = inputs
        zeros, group, N, K = None, 0, qweight.shape[0], qweight.shape[1]
        scheme = "int8_weight_only" if op == "wq_linear_int8" else "fp8"
    if x.shape[-1] != K:
        raise QuantError(f"{op}: input has {x.shape[-1]} features, the quantized weight expects K={K}")
    lead = x.shape[:-1]
    x2 = x if x.dim() == 2 else x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0:
        return out.reshape(*lead, N)
    flat = x.dim() == 2
    if scheme == "fp8":
        check_fp8_device(x.device)
        per_row = bool(attrs.get("act_per_row", True))
        xq, xs = quantize_fp8_activation(x2, per_row)
        k = make_kernel(scheme, M, N, K, x.dtype, 0, bias is not None, template, K,
                        (per_row, scales.numel() > 1 or N == 1))
        args = [xq, qweight, xs, scales]
    else:
        if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise QuantError(f"{op}: activations must be float32/float16/bfloat16, got {x.dtype}")
        k = make_kernel(scheme, M, N, K, x.dtype, group, bias is not None, template, x2.stride(0))
        args = [x2, qweight, scales, zeros if zeros is not None else _placeholder(x.device, torch.uint8)]
    args += [bias if bias is not None else _placeholder(x.device, x.dtype), out]
    k.launch(args, config)
    return out if flat else out.reshape(*lead, N)


_PLACEHOLDERS: dict[tuple, torch.Tensor] = {}


def _placeholder(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A one-element tensor for an absent argument (no zero points, no bias), made once per device and dtype:
    the kernel never reads it, and a decode step should not allocate it on every call."""
    key = (device, dtype)
    t = _PLACEHOLDERS.get(key)
    if t is None:
        t = _PLACEHOLDERS[key] = torch.zeros(1, dtype=dtype, device=device)
    return t


def _tuner_space(template: str):
    """The tuner's space for a weight-quantized matmul problem (int8/int4 weights, float activations): weights
    stream once, so BLOCK_N/BLOCK_K and SPLIT_K (to fill the device when M is tiny) are the knobs; wq_gemm also
    tiles M. (Kernels from make_kernel carry their own candidates in info["space"]; this serves space_for.)"""
    from ..tuner.spaces import MIN_M_TILE, ConfigSpace, gemm_smem_bytes, itemsize, pow2_range, tile_too_large

    with_m = template != "wq_gemv"

    def build(shapes: dict, dtype, device) -> ConfigSpace:
        M, N, K = shapes.get("M", 1), shapes["N"], shapes["K"]
        isz = itemsize(dtype)
        knobs = {"BLOCK_M": pow2_range(16, 256)} if with_m else {}
        knobs.update({"BLOCK_N": pow2_range(16, 256), "BLOCK_K": pow2_range(32, 512), "SPLIT_K": [1, 2, 4, 8, 16],
                      "num_warps": [1, 2, 4, 8], "num_stages": [1, 2, 3, 4]})

        def rule(c: dict) -> str | None:
            if with_m and tile_too_large(c["BLOCK_M"], M, MIN_M_TILE):
                return "tile larger than the problem"
            if tile_too_large(c["BLOCK_N"], N) or tile_too_large(c["BLOCK_K"] * c["SPLIT_K"], K, 32):
                return "tile larger than the problem"
            smem = gemm_smem_bytes({"BLOCK_M": 1, **c}, isz, 1)
            if smem > device.smem_per_block:
                return f"shared memory {smem} B > {device.smem_per_block} B"
            if c["BLOCK_N"] * c["BLOCK_K"] / (32 * c["num_warps"]) > 256:
                return "weight tile too large for registers"
            return None

        return ConfigSpace(template, knobs, rule)

    return build


def _register_with_tuner() -> None:
    """Declare the quantized templates to the tuner (their spaces and that their weights are 1 byte/element)."""
    from ..tuner.spaces import register_template

    for template in FN_NAMES:
        register_template(template, _tuner_space(template) if template != "fp8_gemm" else None, "gemm", 1)
    register_template("qmatmul", None, "gemm", 1)  # codegen's fused quantized linear: these kernels + an epilogue


_register_with_tuner()
