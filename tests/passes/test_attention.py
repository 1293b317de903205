"""fuse_attention: attention written as bmm → softmax → bmm (HF eager attention, torch's math SDPA fallback with
a padding mask, GQA's repeat_kv) becomes one sdpa node, with the same results as eager."""
import pytest
import torch
import transformers as T

import tilecraft
from tilecraft.passes import default_passes, fuse_attention
from tilecraft.testing import assert_close

PASSES = [(n, (lambda g: fuse_attention(g, ("cpu",))) if n == "fuse_attention" else f) for n, f in default_passes()]


def _bert(impl):
    return T.BertModel(T.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128, vocab_size=100, attn_implementation=impl))


def _llama():
    return T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                            attn_implementation="eager", use_cache=False))


def _gpt2():
    return T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                          attn_implementation="eager", use_cache=False))


@pytest.mark.parametrize("make,masked", [(lambda: _bert("sdpa"), True), (lambda: _bert("eager"), True),
                                         (_llama, False), (_gpt2, False)],
                         ids=["bert-math-sdpa-masked", "bert-eager-masked", "llama-eager-gqa", "gpt2-eager"])
def test_attention_patterns_become_one_sdpa_node(make, masked):
    torch.manual_seed(0)
    m = make().eval()
    ids = torch.randint(0, 100, (2, 16))
    kw = {"input_ids": ids}
    if masked:
        mask = torch.ones(2, 16, dtype=torch.long)
        mask[1, 9:] = 0  # padding: rows of the second sequence see 9 keys
        kw["attention_mask"] = mask
    c = tilecraft.compile(m, passes=PASSES)
    with torch.no_grad():
        assert_close(c(**kw)[0], m(**kw)[0], msg="first call")
        kw["input_ids"] = torch.randint(0, 100, (2, 16))
        assert_close(c(**kw)[0], m(**kw)[0], msg="fresh inputs")
    ops = c.report.graphs[0].ops
    assert ops.get("sdpa") == 2 and "bmm" not in ops and "softmax" not in ops, ops
    sdpas = [n for n in c.report.graphs[0].graph.nodes if n.op == "sdpa"]
    gqa = make is _llama  # GQA: k/v read grouped, never expanded
    assert all(bool(n.attrs.get("enable_gqa")) == gqa for n in sdpas)
    if gqa:
        assert all(n.inputs[1].type.shape[1] == 2 and n.inputs[2].type.shape[1] == 2 for n in sdpas)
        assert not [n for n in c.report.graphs[0].graph.nodes if n.op == "expand" and n.out.type.rank == 5]


def test_default_pipeline_leaves_cpu_attention_alone():
    m = _gpt2().eval()
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(input_ids=torch.randint(0, 100, (2, 16)))
    ops = c.report.graphs[0].ops
    assert "sdpa" not in ops and ops.get("bmm") == 4


def test_opt_query_scaling_becomes_the_sdpa_scale(monkeypatch):
    """OPT scales q_proj's output by head_dim**-0.5 and runs attention with scale 1: the multiply folds into the
    fused attention's scale (no pass over q), residual adds move to the shape their norm reads (cuBLAS rule on
    for CPU values), and the logits match eager on fresh inputs."""
    from tilecraft.passes import fusion

    monkeypatch.setattr(fusion, "cublas_gemms", lambda v: True)
    torch.manual_seed(0)
    m = T.OPTForCausalLM(T.OPTConfig(hidden_size=64, num_attention_heads=4, ffn_dim=128, num_hidden_layers=2,
                                     vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=64,
                                     attn_implementation="eager")).eval()
    c = tilecraft.compile(m, passes=PASSES)
    with torch.no_grad():
        for seed in (1, 2):
            ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(seed))
            assert_close(c(input_ids=ids, use_cache=False).logits, m(input_ids=ids, use_cache=False).logits)
    g = c.report.graphs[0].graph
    sdpas = [n for n in g.nodes if n.op == "sdpa"]
    assert len(sdpas) == 2 and all(n.attrs["scale"] == pytest.approx(16 ** -0.5) for n in sdpas), sdpas
    assert not [n for n in g.nodes if n.op == "mul" and any(
        getattr(v.producer, "op", None) == "addmm" for v in n.input_values())]
    ops = [k.info.get("ops") for k in c.report.graphs[0].kernels]
    assert sum(o[:2] == ["add", "layer_norm"] for o in ops) == 4, ops


def test_bert_attention_output_reaches_the_projection_as_a_view():
    """torch's math SDPA ends in bmm's [B*H, T, D] viewed back to [B, H, T, D]; fused, that pair of reshapes
    around an attention laid out [b, t, h, d] was a copy (merging B and H is no view of it: an ATen copy of
    19 us per BERT-base layer on an H200). canonicalize drops a reshape and its inverse, so every reshape between
    the attention and the output projection is a view, and the model still matches eager."""
    from tilecraft.passes.layout import _viewable

    torch.manual_seed(0)
    m = _bert("sdpa").to(torch.bfloat16).eval()  # bf16: the math path's fp32 casts around the bmm
    ids = torch.randint(0, 100, (2, 16))
    c = tilecraft.compile(m, passes=PASSES)
    with torch.no_grad():
        assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0])
    g = c.report.graphs[0].graph
    users = g.users()
    sdpas = [n for n in g.nodes if n.op == "sdpa"]
    assert len(sdpas) == 2
    for n in sdpas:
        stack, views = [n.out], 0
        while stack:
            for u in users.get(stack.pop(), []):
                if u.op in ("view", "permute", "alias"):
                    assert u.op != "view" or _viewable(u.inputs[0].type, u.out.type.shape), u
                    views += u.op == "view"
                    stack.append(u.out)
        assert views >= 1
