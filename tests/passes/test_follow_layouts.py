"""follow_input_layouts: a pointwise result takes the permuted layout of its first full-shape operand, as eager's
TensorIterator does (RoPE on a transposed q stays [b, t, h, d] in memory), and results stay the same."""
import pytest
import torch
import transformers as T

import tilecraft
from tilecraft.passes import default_passes, follow_input_layouts, fuse_attention, materialize_reshapes
from tilecraft.testing import assert_close

CPU = {"fuse_attention": lambda g: fuse_attention(g, ("cpu",)),
       "follow_input_layouts": lambda g: follow_input_layouts(g, ("cpu",)),
       "materialize_reshapes": lambda g: materialize_reshapes(g, ("cpu",))}
PASSES = [(n, CPU.get(n, f)) for n, f in default_passes()]


def test_rope_keeps_the_transposed_layout_and_matches_eager():
    torch.manual_seed(0)
    m = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                         use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 16))
    for backend in ("triton", "aten"):
        torch._dynamo.reset()
        c = tilecraft.compile(m, passes=PASSES, matmul=backend)
        with torch.no_grad():
            assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0], msg=backend)
            ids2 = torch.randint(0, 100, (2, 16))
            assert_close(c(input_ids=ids2)[0], m(input_ids=ids2)[0], msg=backend)
        g = c.report.graphs[0].graph
        sdpa = [n for n in g.nodes if n.op == "sdpa"]
        assert len(sdpa) == 2
        q = sdpa[0].inputs[0].type  # RoPE's result: [b, h, t, d] laid out as [b, t, h, d]
        assert q.shape == (2, 4, 16, 16) and q.strides == (1024, 16, 64, 1), q
        assert not c.report.graphs[0].program.copies  # no kernel input needed a layout copy


def test_gqa_repeat_is_copied_by_a_generated_kernel():
    """LLaMA's GQA repeat_kv (k, v expanded over the query heads and merged into the head dim) cannot be a view:
    a generated copy makes it, so the attention op reads a plain tensor and no ATen copy runs."""
    torch.manual_seed(0)
    m = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                         use_cache=False)).eval()
    ids = torch.randint(0, 100, (2, 16))
    c = tilecraft.compile(m, passes=PASSES)
    with torch.no_grad():
        assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0])
    g = c.report.graphs[0].graph
    sdpa = [n for n in g.nodes if n.op == "sdpa"]
    for n in sdpa:
        for kv in n.inputs[1:3]:
            v = kv
            while v.producer.op == "view":
                v = v.producer.inputs[0]
            assert v.producer.op == "copy", [kv.producer.op, v.producer.op]
    kernels = c.report.graphs[0].kernels
    assert sum(k.info["ops"].count("copy") for k in kernels) == 2 * len(sdpa)  # k and v of each layer
    assert not c.report.graphs[0].program.copies


@pytest.mark.parametrize("arch", ["Llama", "Qwen2"])
def test_gqa_model_in_bf16_on_the_aten_backend(arch):
    """A LLaMA-/Qwen2-style bf16 model as the GPU runs it (cuBLAS backend, layout passes on): no ATen copy runs
    before the attention op (k's RoPE kernel writes the expanded k itself, v is expanded by one generated copy),
    the residual adds after o_proj/down_proj fold into cuBLAS's addmm (no epilogue kernel; the RMSNorm after
    them casts to fp32 as it loads), and the logits match eager."""
    torch.manual_seed(0)
    cfg = getattr(T, f"{arch}Config")(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=100, use_cache=False)
    m = getattr(T, f"{arch}ForCausalLM")(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(0, 100, (2, 16))
    c = tilecraft.compile(m, passes=PASSES, matmul="aten")
    with torch.no_grad():
        assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0])
        ids2 = torch.randint(0, 100, (2, 16))
        assert_close(c(input_ids=ids2)[0], m(input_ids=ids2)[0])
    prog = c.report.graphs[0].program
    assert not prog.copies and "copy" not in prog.torch_ops() and prog.torch_ops().count("sdpa") == 2
    steps = [s for s in prog.steps if hasattr(s, "kernel")]
    copies = [s for s in steps if "copy" in s.kernel.info.get("ops", [])]
    expanded = (2, 2, 2, 16, 16)  # [b, kv heads, repeats, t, head dim]
    rope_k = [s for s in copies if "cat" in s.kernel.info["ops"]]
    assert len(rope_k) == 2 and all([v.type.shape for v in s.outputs] == [expanded] for s in rope_k)
    v_copy = [s for s in copies if s.kernel.info["ops"] == ["copy"]]
    assert len(v_copy) == 2 and all([v.type.shape for v in s.outputs] == [expanded] for s in v_copy)
    mms = [s.kernel for s in steps if s.kernel.template == "matmul" and s.kernel.config["BACKEND"] == "aten"]
    folded = [k for k in mms if k.aten.residual is not None]
    assert len(folded) >= 2 and all(k.info["ops"] == ["mm", "add"] and k.aten.epilogue is None for k in folded)
    # each folded add after layer 0's o_proj writes into the dead residual's buffer (in-place addmm_, no copy)
    donated = [s for s in steps if s.kernel in folded and s.plan[2] is not None]
    assert len(donated) >= len(folded) - 1, [s.kernel.name for s in steps if s.kernel in folded]
    # no GEMM stores an fp32 copy of the residual stream for the norm: the norms read bf16 and cast
    assert all(v.type.dtype == torch.bfloat16 for s in steps if s.kernel.template == "matmul" for v in s.outputs)
    norms = [s.kernel.info["ops"] for s in steps if s.kernel.template == "reduction"]
    assert len(norms) == 5 and all(ops[:2] == ["cast", "pow_scalar"] for ops in norms[1:]), norms
