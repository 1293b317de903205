"""GPT-NeoX's partial RoPE: q and k are slices of the fused qkv projection (`qkv.view(b, t, h, 3d).transpose(1, 2)`,
not dense) and end in `cat([rotated, pass_through], -1)`. follow_input_layouts makes the RoPE kernel write them in
[b, t, h, d] order (as LLaMA's), the attention returns that layout, and the transpose + reshape before `dense` is a
view instead of an ATen copy; results match eager. LLaMA's RoPE path keeps its layout."""
import pytest
import torch
import transformers as T

import tilecraft
from tilecraft.compiler.api import Options
from tilecraft.compiler.runtime import KernelProgram
from tilecraft.ir import Graph, TensorType, interpret, verify
from tilecraft.ir.ops import sdpa_variant
from tilecraft.passes import run_passes
from tilecraft.passes.layout import _viewable
from tilecraft.testing import assert_close

from .test_follow_layouts import PASSES  # the default pipeline with the CUDA layout passes on for the CPU


def _btHd(b, h, t, d):
    """Strides of a [b, h, t, d] tensor laid out as [b, t, h, d]."""
    return (t * h * d, d, h * d, 1)


def _compiled(m):
    """m compiled as the GPU runs it (cuBLAS backend, layout passes on), checked against eager on two inputs."""
    c = tilecraft.compile(m, passes=PASSES, matmul="aten")
    with torch.no_grad():
        for seed in (1, 2):
            ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(seed))
            assert_close(c(input_ids=ids)[0], m(input_ids=ids)[0])
    return c


def _rope_kernels(prog):
    return [s.kernel for s in prog.steps if hasattr(s, "kernel") and "cat" in s.kernel.info.get("ops", ())
            and any(a.is_output and len(a.shape) == 4 for a in s.kernel.args)]


def test_tiny_neox_rope_writes_bthd_and_matches_eager():
    torch.manual_seed(0)
    cfg = T.GPTNeoXConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=1,
                          rotary_pct=0.25, vocab_size=100, max_position_embeddings=64, use_cache=False)
    cfg._attn_implementation = "sdpa"
    c = _compiled(T.GPTNeoXForCausalLM(cfg).to(torch.bfloat16).eval())
    prog = c.report.graphs[0].program
    (rope,) = _rope_kernels(prog)  # q and k in one kernel, read from qkv
    outs = [a for a in rope.args if a.is_output]
    assert [(a.shape, a.strides) for a in outs] == [((2, 4, 16, 16), _btHd(2, 4, 16, 16))] * 2, outs
    ins = [a for a in rope.args if not a.is_output]
    assert sum(a.dtype.itemsize * torch.Size(a.shape).numel() for a in ins if len(a.shape) == 2) == 32 * 192 * 2
    sdpa = next(n for n in c.report.graphs[0].graph.nodes if n.op == "sdpa")
    assert sdpa.out.type.strides == _btHd(2, 4, 16, 16) and sdpa.inputs[2].type.strides == (3072, 48, 192, 1)
    assert not prog.copies and "copy" not in prog.torch_ops()


def _neox_attention_graph(b=2, t=8, h=2, d=16, rot=4, variant="_scaled_dot_product_cudnn_attention"):
    """NeoX's attention block as the CUDA capture gives it (HF sdpa path: the captured attention kernel, whose
    result the capture types from FX's meta value: row-major [b, h, t, d] for eager's row-major cat'd q), from the
    qkv projection to `dense`, on the CPU."""
    g = Graph()
    bf = torch.bfloat16
    qkv = g.add_input(TensorType((b * t, 3 * h * d), bf), "qkv")
    cos = g.add_input(TensorType((1, 1, t, rot), bf), "cos")
    sin = g.add_input(TensorType((1, 1, t, rot), bf), "sin")
    w = g.add_input(TensorType((h * d, h * d), bf), "w")
    x = g.add("view", [qkv], {"size": [b, t, h, 3 * d]}).out
    x = g.add("permute", [x], {"dims": [0, 2, 1, 3]}).out

    def sl(v, start, end):
        return g.add("slice", [v], {"dim": 3, "start": start, "end": end, "step": 1}).out

    def rope(v):
        r, rest = sl(v, 0, rot), sl(v, rot, d)
        half = g.add("cat", [g.add("neg", [sl(r, rot // 2, rot)]).out, sl(r, 0, rot // 2)], {"dim": -1}).out
        e = g.add("add", [g.add("mul", [r, cos]).out, g.add("mul", [half, sin]).out]).out
        return g.add("cat", [e, rest], {"dim": -1}).out

    q, k, v = rope(sl(x, 0, d)), rope(sl(x, d, 2 * d)), sl(x, 2 * d, 3 * d)
    meta = sdpa_variant(variant, *(u.type.meta() for u in (q, k, v)), None, True, None)
    att = g.add("sdpa", [q, k, v], {"is_causal": True, "scale": None, "variant": variant},
                out_types=[TensorType(meta.shape, bf, meta.stride())]).out
    o = g.add("permute", [att], {"dims": [0, 2, 1, 3]}).out
    o = g.add("view", [o], {"size": [b * t, h * d]}).out
    g.outputs = [g.add("mm", [o, g.add("permute", [w], {"dims": [1, 0]}).out]).out]
    return g


@pytest.mark.parametrize("variant", ["_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention"])
def test_captured_attention_output_is_viewable_before_dense(variant):
    """The captured cuDNN/flash attention lays its output out like q: with q written [b, t, h, d] its type says
    so (from the kernel's meta function), and `dense` reads `out.transpose(1, 2).reshape(b * t, h * d)` as a view
    (no ATen copy in the cuBLAS path: 8 MiB per layer at NeoX b4x512). Before, q was row-major [b, h, t, d]
    and that reshape could not be a view. The compiled program matches the IR's reference."""
    b, t, h, d = 2, 8, 2, 16
    g = run_passes(_neox_attention_graph(b, t, h, d, variant=variant), PASSES)
    verify(g)
    sdpa = next(n for n in g.nodes if n.op == "sdpa")
    assert sdpa.inputs[0].type.strides == _btHd(b, h, t, d) and sdpa.out.type.strides == _btHd(b, h, t, d)
    mm = next(n for n in g.nodes if n.op == "mm")
    chain, a = [], mm.inputs[0]
    while a.producer is not None and a.producer.op in ("view", "permute"):
        chain.append(a.producer)
        a = a.producer.inputs[0]
    assert a is sdpa.out and all(_viewable(p.inputs[0].type, p.out.type.shape) for p in chain if p.op == "view")

    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(v.type.shape, generator=gen).to(v.type.dtype) for v in g.inputs]
    prog = KernelProgram(g, Options(matmul="aten"))
    assert_close(prog(*inputs)[0], interpret(_neox_attention_graph(b, t, h, d, variant=variant), inputs)[0])
    assert not prog.copies


def test_tiny_llama_rope_keeps_its_layout_and_matches_eager():
    """LLaMA's full RoPE (GQA 4/2): q and k kernels write [b, t, h, d] as before, and match eager."""
    torch.manual_seed(0)
    m = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                         use_cache=False)).to(torch.bfloat16).eval()
    prog = _compiled(m).report.graphs[0].program
    outs = sorted(((a.shape, a.strides) for k in _rope_kernels(prog) for a in k.args if a.is_output), reverse=True)
    assert outs == [((2, 4, 16, 16), _btHd(2, 4, 16, 16)), ((2, 2, 16, 16), _btHd(2, 2, 16, 16))], outs
    assert not prog.copies and "copy" not in prog.torch_ops()
