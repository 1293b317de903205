"""Quantized weight formats: quantize / pack / unpack / dequantize, and converters from checkpoint layouts.

Layouts (weights of a Linear are [N, K]: N outputs, K inputs):

* int8_weight_only: `qweight` int8 [N, K], symmetric per-output-channel `scales` float32 [N];
  w ≈ qweight * scales[:, None], qweight in [-127, 127].
* int4_weight_only: `qweight` uint8 [N, K // 2], two 4-bit unsigned values per byte along K:
  byte j of row n holds w[n, 2j] in its LOW nibble (bits 0-3) and w[n, 2j+1] in its HIGH nibble (bits 4-7).
  `scales` float32 [N, K // G] and `zeros` uint8 [N, K // G] (integer zero points 0..15, asymmetric);
  w ≈ (q - zeros[n, k // G]) * scales[n, k // G]. This is the AWQ/GPTQ scheme (4-bit unsigned codes,
  per-group scale and integer zero point); `from_gptq` / `from_awq` convert those checkpoints' int32-packed
  tensors (`qweight`, `qzeros`, `scales`) into it.
* fp8: `qweight` float8_e4m3fn [N, K], float32 `scales` [N] (per row) or [1] (per tensor);
  w ≈ qweight.float() * scales. Activations are quantized the same way at run time (per row or per tensor).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SCHEMES = ("int8_weight_only", "int4_weight_only", "fp8")
INT4_GROUP_SIZES = (32, 64, 128)
FP8_MAX = 448.0  # largest finite float8_e4m3fn


class QuantError(ValueError):
    """A weight, shape, dtype or device that a quantization scheme cannot take; the message says which."""


@dataclass
class QuantizedWeight:
    """A quantized [N, K] weight: its scheme, packed tensors and the group size (int4) or granularity (fp8)."""

    scheme: str
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None = None
    group_size: int = 0  # int4 only
    shape: tuple[int, int] = (0, 0)  # (N, K) of the float weight

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self, dtype)


def _check_weight(w: torch.Tensor, scheme: str) -> None:
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise QuantError(f"{scheme}: expects a 2-D [out_features, in_features] weight, got "
                         f"{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}")
    if not w.dtype.is_floating_point or w.dtype == torch.float8_e4m3fn:
        raise QuantError(f"{scheme}: expects a float32/float16/bfloat16 weight, got {w.dtype}")


# ------------------------------------------------------------------------------------------------ int8
def quantize_int8(w: torch.Tensor) -> QuantizedWeight:
    """Symmetric per-output-channel int8: scale = absmax(row) / 127."""
    _check_weight(w, "int8_weight_only")
    wf = w.detach().float()
    scales = (wf.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(wf / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return QuantizedWeight("int8_weight_only", q.contiguous(), scales.contiguous(), None, 0, tuple(w.shape))


# ------------------------------------------------------------------------------------------------ int4
def check_int4_shape(n: int, k: int, group_size: int) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise QuantError(f"int4_weight_only: group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    if k % 2:
        raise QuantError(f"int4_weight_only: in_features K={k} is odd; two 4-bit values are packed per byte "
                         f"along K, so K must be even")
    if k % group_size:
        raise QuantError(f"int4_weight_only: in_features K={k} is not divisible by group_size={group_size}")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """uint8 codes [N, K] in 0..15 → bytes [N, K//2]: even k in the low nibble, odd k in the high nibble."""
    if q.dim() != 2 or q.shape[1] % 2:
        raise QuantError(f"pack_int4: expects [N, K] codes with even K, got {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise QuantError("pack_int4: codes must lie in 0..15")
    q = q.to(torch.uint8)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """bytes [N, K//2] → uint8 codes [N, K] (inverse of pack_int4)."""
    if packed.dtype != torch.uint8 or packed.dim() != 2:
        raise QuantError(f"unpack_int4: expects uint8 [N, K//2], got {packed.dtype} {tuple(packed.shape)}")
    out = torch.empty(packed.shape[0], packed.shape[1] * 2, dtype=torch.uint8, device=packed.device)
    out[:, 0::2] = packed & 0xF
    out[:, 1::2] = packed >> 4
    return out


def quantize_int4(w: torch.Tensor, group_size: int = 128) -> QuantizedWeight:
    """Asymmetric per-group int4 (min/max): scale = (max - min) / 15, zero = round(-min / scale)."""
    _check_weight(w, "int4_weight_only")
    n, k = w.shape
    check_int4_shape(n, k, group_size)
    wg = w.detach().float().reshape(n, k // group_size, group_size)
    lo = wg.amin(dim=2).clamp(max=0.0)
    hi = wg.amax(dim=2).clamp(min=0.0)
    scales = ((hi - lo) / 15.0).clamp(min=1e-12)
    zeros = torch.round(-lo / scales).clamp(0, 15)
    q = torch.round(wg / scales[..., None] + zeros[..., None]).clamp(0, 15).to(torch.uint8).reshape(n, k)
    return QuantizedWeight("int4_weight_only", pack_int4(q), scales.contiguous(), zeros.to(torch.uint8).contiguous(),
                           group_size, (n, k))


def int4_from_packed(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                     group_size: int) -> QuantizedWeight:
    """Wrap already-quantized int4 tensors in tilecraft layout (see module doc), checking shapes and dtypes."""
    if qweight.dtype != torch.uint8 or qweight.dim() != 2:
        raise QuantError(f"int4 qweight must be uint8 [N, K//2], got {qweight.dtype} {tuple(qweight.shape)}")
    n, k = qweight.shape[0], qweight.shape[1] * 2
    check_int4_shape(n, k, group_size)
    want = (n, k // group_size)
    if tuple(scales.shape) != want or tuple(zeros.shape) != want:
        raise QuantError(f"int4 scales/zeros must be [N, K//group_size] = {list(want)}, got "
                         f"{list(scales.shape)} and {list(zeros.shape)}")
    if not scales.dtype.is_floating_point:
        raise QuantError(f"int4 scales must be floating point, got {scales.dtype}")
    return QuantizedWeight("int4_weight_only", qweight.contiguous(), scales.float().contiguous(),
                           zeros.to(torch.uint8).contiguous(), group_size, (n, k))


def _unpack_int32(t: torch.Tensor, dim: int) -> torch.Tensor:
    """int32 tensor with 8 nibbles per element (nibble i at bits 4i..4i+3) → codes, 8x longer along dim."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=t.device)
    codes = (t.to(torch.int32).unsqueeze(-1) >> shifts) & 0xF  # [..., 8]
    if dim == 0:
        return codes.permute(0, 2, 1).reshape(t.shape[0] * 8, t.shape[1])
    return codes.reshape(t.shape[0], t.shape[1] * 8)


AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # column c of a group of 8 sits in nibble AWQ_REVERSE_ORDER[c]


def from_gptq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int,
              g_idx: torch.Tensor | None = None, zero_offset: int = 1) -> QuantizedWeight:
    """GPTQ checkpoint (AutoGPTQ/exllama "gptq" format) → tilecraft int4.

    qweight int32 [K//8, N] (nibble i of row r holds k = 8r + i), qzeros int32 [K//G, N//8] (nibble i holds
    column 8c + i; stored value = zero - `zero_offset`, 1 in the v1 format), scales fp16 [K//G, N].
    Act-order checkpoints (a g_idx that is not k // G) are rejected."""
    k = qweight.shape[0] * 8
    if g_idx is not None and not torch.equal(g_idx.cpu().long(), torch.arange(k) // group_size):
        raise QuantError("from_gptq: act-order (desc_act) checkpoints with a permuted g_idx are not supported")
    codes = _unpack_int32(qweight, 0).t()  # [N, K]
    zeros = (_unpack_int32(qzeros, 1) + zero_offset).clamp(0, 15).t()  # [N, K//G]
    return int4_from_packed(pack_int4(codes.to(torch.uint8)), scales.t().float(), zeros, group_size)


def from_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> QuantizedWeight:
    """AWQ checkpoint (AutoAWQ GEMM format) → tilecraft int4.

    qweight int32 [K, N//8] and qzeros int32 [K//G, N//8], both packed along N with AutoAWQ's interleave (column
    8c + j in nibble AWQ_REVERSE_ORDER[j]); scales fp16 [K//G, N]; zeros have no offset."""
    order = torch.tensor([AWQ_REVERSE_ORDER[j] for j in range(8)], device=qweight.device)

    def unpack(t):
        c = _unpack_int32(t, 1).reshape(t.shape[0], t.shape[1], 8)
        return c[:, :, order].reshape(t.shape[0], t.shape[1] * 8)

    codes = unpack(qweight).t()  # [N, K]
    zeros = unpack(qzeros).t()
    return int4_from_packed(pack_int4(codes.to(torch.uint8)), scales.t().float(), zeros, group_size)


# ------------------------------------------------------------------------------------------------ fp8
def quantize_fp8(w: torch.Tensor, per_row: bool = True) -> QuantizedWeight:
    """e4m3 with per-row (or per-tensor) scale = absmax / 448."""
    _check_weight(w, "fp8")
    wf = w.detach().float()
    amax = wf.abs().amax(dim=1) if per_row else wf.abs().amax().reshape(1)
    scales = (amax / FP8_MAX).clamp(min=1e-12)
    q = (wf / (scales[:, None] if per_row else scales)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return QuantizedWeight("fp8", q.contiguous(), scales.contiguous(), None, 0, tuple(w.shape))


def quantize_fp8_activation(x: torch.Tensor, per_row: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic activation quantization for fp8 matmuls: (x_fp8 [M, K], scales [M] or [1])."""
    xf = x.float()
    amax = xf.abs().amax(dim=1) if per_row else xf.abs().amax().reshape(1)
    s = (amax / FP8_MAX).clamp(min=1e-12)
    q = (xf / (s[:, None] if per_row else s)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, s


# ------------------------------------------------------------------------------------------------ common
def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float [N, K] weight a quantized weight stands for (the reference the kernels are checked against)."""
    return dequantize_tensors(qw.scheme, qw.qweight, qw.scales, qw.zeros, qw.group_size).to(dtype)


def dequantize_tensors(scheme: str, qweight, scales, zeros=None, group_size: int = 0) -> torch.Tensor:
    if scheme == "int8_weight_only":
        return qweight.float() * scales.float()[:, None]
    if scheme == "int4_weight_only":
        codes = unpack_int4(qweight).float()
        n, k = codes.shape
        g = codes.reshape(n, k // group_size, group_size)
        return ((g - zeros.float()[..., None]) * scales.float()[..., None]).reshape(n, k)
    if scheme == "fp8":
        s = scales.float()
        return qweight.float() * (s[:, None] if s.numel() == qweight.shape[0] and s.numel() > 1 else s)
    raise QuantError(f"unknown quantization scheme {scheme!r}; known: {SCHEMES}")


def quantize_weight(w: torch.Tensor, scheme: str, group_size: int = 128, per_row: bool = True) -> QuantizedWeight:
    """Quantize a float [N, K] weight with `scheme` (one of SCHEMES)."""
    if scheme == "int8_weight_only":
        return quantize_int8(w)
    if scheme == "int4_weight_only":
        return quantize_int4(w, group_size)
    if scheme == "fp8":
        return quantize_fp8(w, per_row)
    raise QuantError(f"unknown quantization scheme {scheme!r}; known: {SCHEMES}")
