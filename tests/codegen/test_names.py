"""Kernel sources depend on structure only: identical layers give byte-identical sources (one module, one Triton
compile, one schedule key), and the source reads like Triton's tutorial (role names, `# ir:` comments)."""
import re

import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.testing import assert_close, seeded


def compiled_kernels(model, *inputs, **kw):
    """Compile model, check it against eager, return its kernels in launch order."""
    c = tilecraft.compile(model)
    with torch.no_grad():
        got = c(*inputs, **kw)
        expected = model(*inputs, **kw)
    got, expected = (x[0] if isinstance(x, (tuple, list)) or hasattr(x, "logits") else x for x in (got, expected))
    assert_close(got, expected)
    assert not any(getattr(s, "failed", False) for g in c.report.graphs for s in g.program.steps)
    return [k for g in c.report.graphs for k in g.kernels]


def test_two_identical_mlp_layers_share_one_source_module_and_key():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU()).eval()
    ks = compiled_kernels(model, torch.randn(4, 16, generator=seeded(1)))
    assert len(ks) == 2 and ks[0].name != ks[1].name  # reports still tell the steps apart
    assert ks[0].source == ks[1].source and ks[0].key == ks[1].key
    assert ks[0].fn is ks[1].fn  # one loaded module: Triton compiles it once
    assert "def matmul_addmm_gelu(out0_ptr, a_ptr, b_ptr, bias_ptr, BLOCK_M: tl.constexpr," in ks[0].source


def tiny_gpt2(n_layer: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=64, n_head=2, vocab_size=100, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()


def test_gpt2_layers_share_sources_and_keys_across_depths():
    ids = torch.randint(0, 100, (2, 8), generator=seeded(3))
    k3 = compiled_kernels(tiny_gpt2(3), input_ids=ids, use_cache=False)
    k4 = compiled_kernels(tiny_gpt2(4), input_ids=ids, use_cache=False)
    per_layer = len(k4) - len(k3)
    assert per_layer == 9  # LayerNorm, QKV, Q@K^T, softmax, @V, proj+residual, LayerNorm, fc+GELU, fc+residual
    # A middle layer has 8 distinct kernels (its two LayerNorms are one), 6 kernels lie outside the layers
    # (positions, the attention mask, the final LayerNorm, the LM head) and 3 are boundary variants: layer 0's
    # first LayerNorm takes the embeddings and its residual is their 3-D sum; the last layer's residual add
    # moves into the final LayerNorm. A fourth layer adds 9 kernels and no source.
    assert len({k.source for k in k4}) == len({k.source for k in k3}) == 8 + 6 + 3
    assert {k.key for k in k4} == {k.key for k in k3}  # schedule DB keys do not depend on the model's depth
    assert len({k.name for k in k4}) == len(k4)
    by_source = {}
    for k in k4:
        assert by_source.setdefault(k.source, k.fn) is k.fn  # one module per source


def test_kernel_source_reads_like_the_tutorial():
    def f(x, y):
        return torch.nn.functional.gelu(x + y) * 2

    x, y = (torch.randn(4, 8, generator=seeded(i)) for i in (1, 2))
    (k,) = compiled_kernels(f, x, y)
    src = k.source
    assert "def pointwise_add_gelu_mul(out0_ptr, in0_ptr, in1_ptr, XBLOCK: tl.constexpr):" in src
    assert re.findall(r"# ir: .*", src) == ["# ir: add -> float32[4,8]", "# ir: gelu -> float32[4,8]",
                                           "# ir: mul -> float32[4,8]"]
    assert ".to(tl.float32)" not in src  # fp32 values are never cast to fp32
    assert "add = in0 + in1" in src and "tl.store(out0_ptr + xindex, mul, xmask)" in src

    (kb,) = compiled_kernels(f, x.bfloat16(), y.bfloat16())  # bf16 still loads up to fp32, stores as bf16
    assert kb.source.count(".to(tl.float32)") >= 2 and ".to(tl.bfloat16)" in kb.source


@pytest.mark.parametrize("fn, kept", [
    (lambda x: torch.sign(x) * 0.5, "(tl.where(in0 > 0, 1, tl.where(in0 < 0, -1, 0))).to(tl.float32)"),
    (lambda x: torch.where(x > 0, torch.full_like(x, 2), x) * x, "((xindex * 0 + 2)).to(tl.float32)"),
])
def test_casts_that_change_the_dtype_stay(fn, kept):
    """An fp32 op made of int literals (sign) or a filled tensor is still cast to fp32."""
    (k,) = compiled_kernels(fn, torch.randn(3, 5, generator=seeded(4)))
    assert kept in k.source
