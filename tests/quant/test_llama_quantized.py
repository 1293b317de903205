"""A tiny LLaMA (transformers) through `tilecraft.compile(m, quantize=...)` on the CPU interpreter: what
bench/models.py runs at full size on the GPU. Checked against the quantized copy's own dequantized reference
(eager), and the user's model is left unchanged."""
import pytest
import torch

import tilecraft
from tilecraft.testing import assert_close

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("scheme,bound", [("int8_weight_only", 0.02), ("int4_weight_only", 0.3)])
def test_tiny_llama_quantized_matches_its_dequantized_reference(scheme, bound):
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
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
