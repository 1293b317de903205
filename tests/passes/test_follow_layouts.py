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


def test_repeat_kv_reshape_read_by_torch_gets_a_generated_copy():
    """materialize_reshapes: an expanded tensor merged into the head dim (GQA's repeat_kv, when the attention op
    takes no grouped k/v) cannot be a view: a generated copy makes it, so the op run through torch reads a
    plain tensor (no ATen strided copy), and the results match."""
    from tilecraft.ir import Graph, TensorType, interpret, verify

    def graph():
        g = Graph()
        q = g.add_input(TensorType((2, 4, 8, 16), torch.float32), "q")
        kv = g.add_input(TensorType((2, 2, 8, 16), torch.float32), "kv")
        k = g.add("mul", [kv, 2.0]).out
        e = g.add("expand", [g.add("unsqueeze", [k], {"dim": 2}).out], {"size": [2, 2, 2, 8, 16]}).out
        kk = g.add("view", [e], {"size": [2, 4, 8, 16]}).out
        g.outputs = [g.add("sdpa", [q, kk, kk], {"is_causal": True}).out]
        return g

    inputs = [torch.randn(2, 4, 8, 16), torch.randn(2, 2, 8, 16)]
    g = materialize_reshapes(graph(), ("cpu",))
    verify(g)
    assert_close(interpret(g, inputs), interpret(graph(), inputs))
    view = next(n for n in g.nodes if n.op == "view")
    assert view.inputs[0].producer.op == "copy" and view.inputs[0].type.is_contiguous
    assert [n.op for n in materialize_reshapes(graph()).nodes].count("copy") == 0  # CUDA only by default


@pytest.mark.parametrize("arch", ["Llama", "Qwen2"])
def test_gqa_model_in_bf16_on_the_aten_backend(arch):
    """A LLaMA-/Qwen2-style bf16 model as the GPU runs it (cuBLAS backend, layout passes on): no copy of k/v runs
    before the attention op (sdpa reads them grouped: enable_gqa; k's RoPE kernel writes what it reads),
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
    assert not [s.kernel.name for s in steps if "copy" in s.kernel.info.get("ops", [])]
    sdpa = [n for n in c.report.graphs[0].graph.nodes if n.op == "sdpa"]
    assert all(n.attrs.get("enable_gqa") and n.inputs[1].type.shape == (2, 2, 16, 16) for n in sdpa)
    rope_k = [s for s in steps if any(v is n.inputs[1] for n in sdpa for v in s.outputs)]
    assert len(rope_k) == 2 and all("cat" in s.kernel.info["ops"] for s in rope_k)  # RoPE stores k as sdpa reads it
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


def test_a_broadcast_read_value_stays_row_major():
    """RoPE's cos/sin come from a transposed [1, d, t] product: following that layout would make every RoPE kernel
    read them (broadcast over batch and heads) with a stride of t. A value read broadcast stays row-major; one
    read at its own size follows its input as before; the generated kernels match the interpreter."""
    from tilecraft.compiler.api import Options
    from tilecraft.compiler.runtime import KernelProgram
    from tilecraft.ir import Graph, TensorType, interpret

    def graph():
        g = Graph()
        f = g.add_input(TensorType((1, 16, 8), torch.float32), "freqs")  # [1, d, t]
        q = g.add_input(TensorType((2, 4, 8, 16), torch.float32), "q")  # [b, h, t, d]
        ft = g.add("permute", [g.add("mul", [f, 3.0]).out], {"dims": [0, 2, 1]}).out  # [1, t, d], t-major
        cos = g.add("cos", [ft]).out  # read broadcast below: stays row-major
        sin = g.add("sin", [ft]).out  # read at its own size: follows the transposed layout
        rot = g.add("mul", [q, g.add("unsqueeze", [cos], {"dim": 1}).out]).out
        g.outputs = [rot, g.add("mul", [sin, 2.0]).out]
        return g

    g = follow_input_layouts(graph(), ("cpu",))
    cos = next(n for n in g.nodes if n.op == "cos").out.type
    sin = next(n for n in g.nodes if n.op == "sin").out.type
    assert cos.is_contiguous, cos
    assert sin.strides == (128, 1, 8), sin
    inputs = [torch.randn(1, 16, 8), torch.randn(2, 4, 8, 16)]
    prog = KernelProgram(g, Options())
    assert prog.kernels and not prog.copies
    for a, b in zip(prog(*inputs), interpret(graph(), inputs)):
        assert_close(a, b)
