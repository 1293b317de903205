"""A tiny LLaMA (transformers) through `tilecraft.compile(m, quantize=...)` on the CPU interpreter: what
bench/models.py runs at full size on the GPU. Checked against the quantized copy's own dequantized reference
(eager), and the user's model is left unchanged."""
import pytest
import torch

import tilecraft
from tilecraft.testing import assert_close

transformers = pytest.importorskip("transformers")


def _tiny(seed: int, family: str = "Llama", layers: int = 2, heads: int = 4, kv_heads: int = 2):
    """A tiny HF causal LM (hidden 64, head dim 64 / heads), seeded, in eval mode."""
    cfg = getattr(transformers, f"{family}Config")(vocab_size=128, hidden_size=64, intermediate_size=128,
                                                   num_hidden_layers=layers, num_attention_heads=heads,
                                                   num_key_value_heads=kv_heads, max_position_embeddings=64)
    torch.manual_seed(seed)
    return getattr(transformers, f"{family}ForCausalLM")(cfg).eval()


@pytest.mark.parametrize("scheme,bound", [("int8_weight_only", 0.02), ("int4_weight_only", 0.3)])
def test_tiny_llama_quantized_matches_its_dequantized_reference(scheme, bound):
    model = _tiny(0)
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    with torch.no_grad():
        ref_float = model(ids, use_cache=False).logits
        c = tilecraft.compile(model, quantize=scheme)
        got = c(ids, use_cache=False).logits
        ref = c.model(ids, use_cache=False).logits  # the custom ops' dequantize-then-matmul, eager
        assert_close(got, ref)
        assert torch.equal(model(ids, use_cache=False).logits, ref_float)  # the float model is unchanged
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    err = float((got - ref_float).norm() / ref_float.norm())
    assert 0 < err < bound, err
    rec = c.report.graphs[0]
    q = [k for k in rec.kernels if k.template in ("wq_gemv", "wq_gemm")]
    # q/k/v and gate/up merge (passes.merge_sibling_qlinears): 4 per layer (qkv, o, gate_up, down) + lm_head
    assert len(q) == 9 and not any(f.startswith("wq_linear") for f in rec.fallbacks)
    assert sum("add" in k.info["ops"] for k in q) == 4  # the residual adds fuse into o_proj and down_proj
    # gate/up are a `pair` (16 rows: the Triton GEMM's sizes): SwiGLU's silu(gate) * up is their kernel's epilogue
    assert sum(k.info["ops"] == ["wq_linear_" + scheme[:4], "sigmoid", "mul", "mul"] for k in q) == 2
    assert set(rec.program.torch_ops()) <= {"cumsum", "index", "cat"}


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norms_fold_into_the_quantized_gemms(scheme, dtype):
    """passes.fold_rms_norm: the norms after o_proj and down_proj cost no launch: the GEMM that writes h also
    writes h * g and h's partial sums of squares (sumsq_tiles), the next GEMM scales its rows by the norm's
    rsqrt. Only the first norm (after the embedding, no GEMM writes it) stays a kernel. Against the quantized
    model's eager reference, on fresh inputs and with split-K (the partial sums then cross programs)."""
    model = _tiny(3).to(dtype)
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize=scheme)
    rec = None
    with torch.no_grad():
        for seed in (4, 5):
            ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(seed))
            assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)
            rec = rec or c.report.graphs[0]
        kernels = rec.program.kernels
        norms = [k for k in kernels if k.template == "reduction" and "rsqrt" in k.info.get("ops", [])]
        assert len(norms) == 1 and "embedding" in norms[0].info["ops"]
        sums = [k for k in kernels if "sumsq_tiles" in k.info.get("ops", [])]
        scaled = [n for n in rec.program.graph.nodes if "rms_eps" in n.attrs]
        assert len(sums) == 4 and len(scaled) == 4  # post-attention x2, input of layer 1, final
        assert all(k.info["ops"][:3] == [k.info["ops"][0], "add", "mul"] for k in sums)  # o/down + residual, h * g
        for k in kernels:
            if k.template == "wq_gemm":
                k.config = dict(k.config, SPLIT_K=2, BLOCK_K=32, BLOCK_N=64 if "sumsq_tiles" in k.info["ops"] else 16)
        with pytest.raises(Exception, match="multiple of 32"):  # (sums over 32-column pieces: no 16-wide tiles)
            sums[0].check_config(dict(sums[0].config, BLOCK_N=16))
        ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(6))
        assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)
    assert not [s.kernel.name for s in rec.program.steps if getattr(s, "failed", False)]


def test_a_norm_before_a_biased_linear_stays():
    """Qwen2's q/k/v carry a bias, which comes after the row scale: its input norms stay kernels; the
    post-attention and final norms (bias-free gate/up and lm_head) fold."""
    model = _tiny(7, "Qwen2")
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize="int8_weight_only")
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)
    graph = c.report.graphs[0].program.graph
    scaled = [n for n in graph.nodes if "rms_eps" in n.attrs]
    assert len(scaled) == 3 and all(n.inputs[1].type.shape[0] in (256, 128) for n in scaled)  # gate/up, lm_head


def _rope_linears(graph):
    return [n for n in graph.nodes if n.attrs.get("rope")]


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only"])
def test_rope_is_the_qkv_gemms_epilogue(scheme):
    """passes.fuse_rope_qlinear: RoPE on q and k runs in the merged q/k/v GEMM's epilogue (its tiles hold columns
    c and c + D/2 of a head side by side); no RoPE kernel is left. Against the quantized model's eager reference on
    fresh inputs, with the default tiles (a head each), with two tiles a head and with split-K."""
    model = _tiny(11, heads=2, kv_heads=1)
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize=scheme)
    with torch.no_grad():
        for seed in (12, 13):
            ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(seed))
            assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)
        prog = c.report.graphs[0].program
        ropes = _rope_linears(prog.graph)
        assert [n.attrs["rope"] for n in ropes] == [(64 + 32, 32)] * 2  # q and k columns of each layer, head dim 32
        assert not any("neg" in k.info.get("ops", []) for k in prog.kernels)  # no rotate_half left anywhere
        qkv = [k for k in prog.kernels if getattr(k, "extra", {}).get("ROPE")]
        assert len(qkv) == 2 and all(k.extra["ROPE"] == 16 and "rp_r" in k.source for k in qkv)
        with pytest.raises(Exception, match="within a head of 32"):  # (pairs of one head's columns a tile)
            qkv[0].check_config(dict(qkv[0].config, BLOCK_N=64))
        for cfg in ({"BLOCK_N": 16, "BLOCK_M": 32}, {"BLOCK_N": 16, "SPLIT_K": 2, "BLOCK_K": 32}):  # 2 tiles a head
            for k in qkv:
                k.config = dict(k.config, **cfg)
            ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(14))
            assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)


def test_rope_with_a_kv_cache_and_a_returned_k():
    """A KV cache's keys are a copy of the rotated k (the cache's cat): RoPE still joins the GEMM and the cache
    holds eager's keys. A rotated k returned as it is (eager's layout, a graph output) keeps its own RoPE kernel:
    only q's joins the GEMM."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    model = _tiny(15, layers=1)
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize="int8_weight_only")
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(16))
    with torch.no_grad():
        got, ref = c(ids, use_cache=True), c.model(ids, use_cache=True)
        assert_close(got.logits, ref.logits)
        assert_close(got.past_key_values.layers[0].keys, ref.past_key_values.layers[0].keys)
    assert [n.attrs["rope"] for n in _rope_linears(c.report.graphs[0].program.graph)] == [(96, 16)]

    class Attn(torch.nn.Module):
        def __init__(self, d=64, heads=4):
            super().__init__()
            self.heads, (self.q, self.k, self.v) = heads, (torch.nn.Linear(d, d, bias=False) for _ in range(3))

        def forward(self, x, cos, sin):
            B, T, d = x.shape
            q, k, v = (p(x).view(B, T, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, d), k

    gen = torch.Generator().manual_seed(17)
    x, ang = torch.randn(2, 8, 64, generator=gen), torch.randn(2, 8, 8, generator=gen)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    torch._dynamo.reset()
    c = tilecraft.compile(Attn().eval(), quantize="int4_weight_only")
    with torch.no_grad():
        assert_close(c(x, cos, sin), c.model(x, cos, sin))
    assert [n.attrs["rope"] for n in _rope_linears(c.report.graphs[0].program.graph)] == [(64, 16)]
