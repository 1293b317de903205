"""Attention for a few tokens (decode-sized steps): one Triton program per (batch, query head) holds all its
queries, keys and values (T, S <= 64 tokens), computes the scores with one tl.dot, the softmax in float32 and the
output with a second tl.dot. For LLaMA-492M's b1x16 step cuDNN's fused kernel takes ~6 us per layer (plus a
memset); this needs one launch of 16 x 16 scores per head.

The `sdpa` op (ir/ops.py) takes this path on CUDA by default (`TILECRAFT_SMALL_ATTN=0` turns it off) for the
captured-variant form, causal or not, with a bool or additive mask or none (HF builds an explicit causal mask when
traced), grouped k/v allowed, head dims 16-256 (powers of two), fp16/bf16. On an H200 (bench/sdpa_small_t.py,
16 query / 4 k/v heads of 128, 16 tokens): 2.2 us against cuDNN's 5.9 (9.6 with the traced bool mask, which ATen
converts in two kernels first); LLaMA-492M's b1x16 step 0.542 -> 0.499 ms with the RoPE launches combined. The
output gets the layout the captured variant would give (the IR typed it so: passes/layout.py), worked out once per
geometry on meta tensors.
"""
from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from .emit import interpreting

MAX_TOKENS = 64  # queries and keys per program


@triton.jit
def small_attention_kernel(q_ptr, k_ptr, v_ptr, m_ptr, o_ptr, H, GROUP, T, S, scale,
                           sqb, sqh, sqt, skb, skh, sks, svb, svh, svs, smb, smh, smt, sms, sob, soh, sot,
                           BT: tl.constexpr, BS: tl.constexpr, D: tl.constexpr, CAUSAL: tl.constexpr,
                           MASK: tl.constexpr, F32: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    hk = h // GROUP  # the k/v head serving query head h
    t = tl.arange(0, BT)
    s = tl.arange(0, BS)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * sqb + h * sqh + t[:, None] * sqt + d[None, :], mask=t[:, None] < T, other=0.0)
    k = tl.load(k_ptr + b * skb + hk * skh + s[:, None] * sks + d[None, :], mask=s[:, None] < S, other=0.0)
    v = tl.load(v_ptr + b * svb + hk * svh + s[:, None] * svs + d[None, :], mask=s[:, None] < S, other=0.0)
    if F32:  # (the interpreter: its 16-bit float arithmetic is not exact)
        q, k, v = q.to(tl.float32), k.to(tl.float32), v.to(tl.float32)
    scores = tl.dot(q, tl.trans(k)) * scale
    valid = (s[None, :] < S) & (t[:, None] >= 0)
    if CAUSAL:  # torch's is_causal: query i sees keys 0..i (the mask's upper-left corner)
        valid = valid & (s[None, :] <= t[:, None])
    if MASK != 0:  # attn_mask broadcast to [B, H, T, S] (strides 0 where it broadcasts): 1 bool, 2 additive
        mk = tl.load(m_ptr + b * smb + h * smh + t[:, None] * smt + s[None, :] * sms,
                     mask=(t[:, None] < T) & (s[None, :] < S), other=0)
        if MASK == 1:  # True: the key takes part
            valid = valid & (mk != 0)
        else:
            scores = scores + mk.to(tl.float32)
    scores = tl.where(valid, scores, float("-inf"))
    top = tl.max(scores, 1)
    top = tl.where(top == float("-inf"), 0.0, top)  # a row with every key masked: zeros out, as torch gives
    p = tl.exp(scores - top[:, None])
    p = tl.where(valid, p, 0.0)
    total = tl.sum(p, 1)
    out = tl.dot(p.to(v.dtype), v) / tl.where(total == 0.0, 1.0, total)[:, None]
    tl.store(o_ptr + b * sob + h * soh + t[:, None] * sot + d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=t[:, None] < T)


def enabled() -> bool:
    return os.environ.get("TILECRAFT_SMALL_ATTN", "1").strip().lower() in ("1", "true", "on", "yes")


def supported(q, k, v, attn_mask=None) -> bool:
    """Can small_attention run these [B, H, T, D] / [B, HKV, S, D] tensors? At most MAX_TOKENS queries and keys,
    a power-of-two head dim 16-256, fp16/bf16, k/v heads dividing the query heads, unit stride along D; a mask
    (bool, or additive in q's dtype or float32) that broadcasts to [B, H, T, S], or none."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return False
    B, H, T, D = q.shape
    S = k.shape[2]
    if attn_mask is not None:
        if attn_mask.dtype not in (torch.bool, q.dtype, torch.float32) or attn_mask.dim() > 4:
            return False
        try:
            if torch.broadcast_shapes(attn_mask.shape, (B, H, T, S)) != (B, H, T, S):
                return False
        except RuntimeError:
            return False
    return (q.dtype in (torch.float16, torch.bfloat16) and k.dtype == v.dtype == q.dtype
            and T <= MAX_TOKENS and S <= MAX_TOKENS and T > 0 and S > 0 and 16 <= D <= 256 and D & (D - 1) == 0
            and k.shape[0] == v.shape[0] == B and k.shape[1] == v.shape[1] and H % k.shape[1] == 0
            and k.shape[3] == v.shape[3] == D and v.shape[2] == S
            and q.stride(3) == k.stride(3) == v.stride(3) == 1)


def small_attention(q, k, v, is_causal: bool, scale: float | None, out: torch.Tensor,
                    attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale [+ causal mask] [+ attn_mask]) v into `out` ([B, H, T, D], any strides with unit
    stride along D). A bool attn_mask keeps the keys where it is True; a float one is added to the scores."""
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    bt, bs = max(16, triton.next_power_of_2(T)), max(16, triton.next_power_of_2(S))
    if attn_mask is None:
        mask, mode = q, 0  # (a pointer the kernel never reads)
        mstrides = (0, 0, 0, 0)
    else:
        mask = torch.broadcast_to(attn_mask, (B, H, T, S))
        mode, mstrides = (1 if mask.dtype == torch.bool else 2), mask.stride()
    small_attention_kernel[(B * H,)](
        q, k, v, mask, out, H, H // k.shape[1], T, S, scale, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        *mstrides, *out.stride()[:3], BT=bt, BS=bs, D=D, CAUSAL=bool(is_causal), MASK=mode, F32=interpreting(),
        **({} if interpreting() else {"num_warps": 4}))
    return out


@functools.lru_cache(maxsize=256)
def _variant_strides(variant, q_geo, k_geo, v_geo, dtype, is_causal, scale, mask_geo=None):
    """The output strides of ATen attention kernel `variant` for these (shape, strides) geometries (meta tensors;
    mask_geo: (shape, strides, dtype) of its attn_mask, or None)."""
    from ..ir.ops import sdpa_variant

    q, k, v = (torch.empty_strided(shape, strides, dtype=dtype, device="meta") for shape, strides in
               (q_geo, k_geo, v_geo))
    mask = None if mask_geo is None else torch.empty_strided(*mask_geo[:2], dtype=mask_geo[2], device="meta")
    if k.shape[1] != q.shape[1]:  # (a variant that takes no grouped k/v sees them expanded, as _sdpa does)
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    return tuple(sdpa_variant(variant, q, k, v, mask, is_causal, scale).stride())


def attention_like(variant: str, q, k, v, is_causal: bool, scale, attn_mask=None) -> torch.Tensor | None:
    """small_attention's result in the layout ATen's `variant` would give (what the IR expects of the node), or
    None when that layout is unknown or not unit-stride along D (then the caller runs the variant)."""
    geo = [(tuple(x.shape), tuple(x.stride())) for x in (q, k, v)]
    mgeo = None if attn_mask is None else (tuple(attn_mask.shape), tuple(attn_mask.stride()), attn_mask.dtype)
    try:
        strides = _variant_strides(variant, *geo, q.dtype, bool(is_causal), scale, mgeo)
    except Exception:  # noqa: BLE001 - no meta layout for this variant: it runs itself
        return None
    if strides[3] != 1:
        return None
    out = torch.empty_strided(q.shape, strides, dtype=q.dtype, device=q.device)
    return small_attention(q, k, v, is_causal, scale, out, attn_mask)
