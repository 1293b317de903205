"""The few-token attention kernel (codegen/small_attention.py, the default on CUDA; `TILECRAFT_SMALL_ATTN=0` turns
it off), run by the interpreter on the CPU against torch's math attention: causal and not, grouped k/v, padded token counts, HF's
[b, t, h, d] memory layout in and the captured variant's layout out; what it refuses; the `sdpa` op's dispatch."""
import pytest
import torch
import torch.nn.functional as F

from tilecraft.codegen import small_attention as sa
from tilecraft.testing import assert_close, seeded


def _qkv(b, h, hkv, t, s, d, dtype=torch.float16, seed=0):
    g = seeded(seed)
    # HF's layout: [b, t, h, d] memory viewed as [b, h, t, d]
    q = torch.randn(b, t, h, d, generator=g).to(dtype).transpose(1, 2)
    k, v = (torch.randn(b, s, hkv, d, generator=g).to(dtype).transpose(1, 2) for _ in range(2))
    return q, k, v


def _reference(q, k, v, causal, scale=None):
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal, scale=scale,
                                          enable_gqa=k.shape[1] != q.shape[1]).to(q.dtype)


@pytest.mark.parametrize("b,h,hkv,t,s,d,causal", [(1, 4, 2, 16, 16, 32, True), (2, 4, 4, 16, 16, 64, False),
                                                  (1, 4, 1, 5, 5, 32, True), (1, 2, 2, 3, 7, 16, False),
                                                  (1, 4, 2, 40, 40, 32, True)])
def test_matches_math_attention(b, h, hkv, t, s, d, causal):
    q, k, v = _qkv(b, h, hkv, t, s, d)
    assert sa.supported(q, k, v)
    out = torch.empty(b, t, h, d, dtype=q.dtype).transpose(1, 2)  # written through its strides
    assert_close(sa.small_attention(q, k, v, causal, None, out), _reference(q, k, v, causal))
    scaled = torch.empty_like(out)
    assert_close(sa.small_attention(q, k, v, causal, 0.3, scaled), _reference(q, k, v, causal, 0.3))


def test_masks_bool_and_additive_match_math_attention():
    """HF's traced causal mask ([1, 1, T, S] bool), a padding mask that masks whole rows (torch gives zeros
    there), an additive float mask per head, each against torch's math attention on the same mask."""
    b, h, hkv, t, d = 2, 4, 2, 12, 32
    q, k, v = _qkv(b, h, hkv, t, t, d)
    causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    pad = causal.expand(b, 1, t, t).clone()
    pad[1, :, :, :3] = False  # batch 1: its first three keys are padding, its first three rows see nothing
    g = seeded(3)
    additive = (torch.randn(1, h, t, t, generator=g) * 2).to(q.dtype)
    for mask in (causal, pad, additive):
        assert sa.supported(q, k, v, mask)
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask if mask.dtype ==
                                             torch.bool else mask.float(), enable_gqa=True).to(q.dtype)
        got = sa.small_attention(q, k, v, False, None, torch.empty_like(q), mask)
        assert_close(got, ref)
        assert not got.isnan().any()


def test_refuses_what_it_cannot_run():
    q, k, v = _qkv(1, 4, 2, 16, 16, 32)
    assert not sa.supported(q, k, v, attn_mask=torch.zeros(16, 17))  # does not broadcast to the scores
    assert not sa.supported(q, k, v, attn_mask=torch.zeros(2, 4, 16, 16))  # would widen the batch
    assert not sa.supported(q, k, v, attn_mask=torch.zeros(16, 16, dtype=torch.int32))
    assert not sa.supported(*_qkv(1, 4, 2, sa.MAX_TOKENS + 1, 8, 32))
    assert not sa.supported(*_qkv(1, 4, 2, 8, sa.MAX_TOKENS + 1, 32))
    assert not sa.supported(*_qkv(1, 4, 2, 8, 8, 48))  # head dim not a power of two
    assert not sa.supported(*_qkv(1, 4, 2, 8, 8, 32, dtype=torch.float32))
    assert not sa.supported(*_qkv(1, 6, 4, 8, 8, 32))  # 4 k/v heads do not divide 6 query heads


def test_output_takes_the_captured_variants_layout():
    q, k, v = _qkv(1, 4, 2, 16, 16, 64)
    variant = "_scaled_dot_product_cudnn_attention"
    want = sa._variant_strides(variant, *[(tuple(x.shape), tuple(x.stride())) for x in (q, k, v)], q.dtype, True,
                               None)
    out = sa.attention_like(variant, q, k, v, True, None)
    assert out.stride() == want
    assert_close(out, _reference(q, k, v, True))


def test_an_unknown_variant_layout_leaves_it_to_the_variant():
    q, k, v = _qkv(1, 4, 2, 16, 16, 32)
    assert sa.attention_like("_no_such_attention_kernel", q, k, v, True, None) is None


def test_sdpa_op_takes_it_by_default_and_not_when_told(monkeypatch):
    """ir/ops.py `_sdpa`: with a captured variant on CUDA, the small kernel; with TILECRAFT_SMALL_ATTN=0 (or a
    mask it cannot take), the variant itself. (CPU tensors: `is_cuda` is what the dispatch asks, patched here.)"""
    from tilecraft.ir import ops

    q, k, v = _qkv(1, 4, 2, 16, 16, 32)
    mask = torch.zeros(16, 16, dtype=q.dtype)
    for m in (None, mask):  # (its layouts, from meta, cached before sdpa_variant is patched)
        sa.attention_like("_scaled_dot_product_cudnn_attention", q, k, v, True, None, m)
    calls = []
    monkeypatch.setattr(ops, "sdpa_variant", lambda *a, **kw: calls.append("variant") or _reference(q, k, v, True))
    real = sa.attention_like
    monkeypatch.setattr(sa, "attention_like", lambda *a: calls.append("small") or real(*a))
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setenv("TILECRAFT_SMALL_ATTN", "0")
    ops._sdpa(q, k, v, None, True, None, "_scaled_dot_product_cudnn_attention", True)
    assert calls == ["variant"]
    monkeypatch.delenv("TILECRAFT_SMALL_ATTN")  # the default: on
    calls.clear()
    ops._sdpa(q, k, v, None, True, None, "_scaled_dot_product_cudnn_attention", True)
    ops._sdpa(q, k, v, mask, True, None, "_scaled_dot_product_cudnn_attention", True)
    ops._sdpa(q, k, v, torch.zeros(16, 17, dtype=q.dtype), True, None, "_scaled_dot_product_cudnn_attention", True)
    assert calls == ["small", "small", "variant"], calls  # (a mask it cannot broadcast: the variant)


PTX = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tilecraft.codegen.small_attention import small_attention_kernel as fn
for mask, mtype in ((0, "*bf16"), (1, "*i1")):
    sig = {n: "i32" for n in fn.arg_names}
    sig.update(q_ptr="*bf16", k_ptr="*bf16", v_ptr="*bf16", m_ptr=mtype, o_ptr="*bf16", scale="fp32",
               **{n: "constexpr" for n in ("BT", "BS", "D", "CAUSAL", "MASK", "F32")})
    consts = {"BT": 16, "BS": 16, "D": 128, "CAUSAL": not mask, "MASK": mask, "F32": False}
    k = triton.compile(ASTSource(fn, sig, constexprs=consts,
                                 attrs={(i,): [["tt.divisibility", 16]] for i in range(5)}),
                       target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
    info = qgemm_ptx.ptxas_info(k.asm["ptx"])
    print(info["ptxas_ok"], info["spill_bytes"], "mma" in k.asm["ptx"])
"""


def test_compiles_for_sm90():
    """LLaMA-492M's decode shape (16 tokens, head dim 128, bf16, causal or masked) compiled for sm_90 in a fresh
    process:
    ptxas accepts it, no spills, tensor-core dots."""
    from tests.benches import run_with_qgemm_ptx

    assert run_with_qgemm_ptx(PTX).split() == ["True", "0", "True"] * 2  # without a mask, with a bool one
