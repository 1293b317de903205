"""Bugs the fuzzer found in tilecraft, kept as regression tests (reduced repros).

1. Half-precision layer norm: the IR inferred float32 mean/rstd (meta kernel) where CPU torch gives float16,
   so every fp16/bf16 `native_layer_norm` fell back to torch (31 of 82 layer norms in a 986-model campaign,
   seed 7), and the reference interpreter produced values whose dtype disagreed with their IR type.
2. Reductions accepted out-of-range dims: `sum(x, dim=[7])` on a rank-2 value type-checked (dims were taken
   modulo the rank) while torch raises; found when the reducer rebuilt a graph with a changed attribute.
3. bf16 rounding in generated kernels (interpreted): Triton's interpreter converts fp32 -> bf16 by truncation
   where torch (and GPUs) round to nearest even, so `x.to(bfloat16).to(float32)` and every bf16 store were off
   by one bf16 ulp in about half the elements (campaign seed 1: models 1000109 and 1000061, reduced to 2 and
   6 ops). Fixed in codegen/emit.py (round_to: round by bit arithmetic when interpreting).
4. Size-1 block dims: kernel launches failed (and fell back to torch, with a warning) whenever an offset left out
   a block index — a matmul with M, N or K of 1 (decode-shaped GEMV; store pointer [1, BN] for a [BM, BN] value,
   a scalar tl.dot operand) or a constant offset under a block mask (x[1:2] read in a reduction): 71 fallbacks
   in 314 models (campaign seed 1), and an operand that is one broadcast element (seed 3000011). Fixed in codegen/emit.py (block_offset broadcasts such pointers).
"""
import pytest
import torch

from tilecraft.ir import Graph, TensorType, interpret, verify
from tilecraft.testing import assert_close


class LayerNormRepro(torch.nn.Module):  # reduced from fuzz seed 7000006 (1 op)
    def forward(self, x0, x1, x2):
        v1, v2, v3 = torch.native_layer_norm(x0, [6], x1, x2, 0.001)
        return (v1, v2, v3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_half_layer_norm_compiles_without_fallback(dtype):
    import tilecraft

    g = torch.Generator().manual_seed(1)
    x, w, b = (torch.randn(s, generator=g).to(dtype) for s in ((4, 6), (6,), (6,)))
    model = LayerNormRepro()
    compiled = tilecraft.compile(model)
    with torch.no_grad():
        got, expected = compiled(x, w, b), model(x, w, b)
    assert_close(got, expected)
    rec = compiled.report.graphs[0]
    assert rec.fallbacks == [] and rec.ops == {"layer_norm": 1}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layer_norm_inferred_types_match_cpu_values(dtype):
    gr = Graph()
    x = gr.add_input(TensorType((3, 5), dtype), "x")
    w = gr.add_input(TensorType((5,), dtype), "w")
    node = gr.add("layer_norm", [x, w, w], {"normalized_shape": [5], "eps": 1e-5})
    gr.outputs = list(node.outputs)
    verify(gr)
    vals = interpret(gr, [torch.randn(3, 5).to(dtype), torch.randn(5).to(dtype)])
    for v, t in zip(node.outputs, vals):
        assert (v.type.shape, v.type.dtype) == (tuple(t.shape), t.dtype)
    cuda = TensorType((3, 5), dtype, None, "cuda")  # CUDA kernels keep statistics in float32
    gc = Graph()
    xc = gc.add_input(cuda, "x")
    assert [o.type.dtype for o in gc.add("layer_norm", [xc, None, None], {"normalized_shape": [5]}).outputs] == [
        dtype, torch.float32, torch.float32]


def test_reduction_rejects_out_of_range_dim():
    gr = Graph()
    x = gr.add_input(TensorType((3, 4), torch.float32), "x")
    for op in ("sum", "mean", "amax", "var"):
        with pytest.raises(ValueError, match="dim 7 is out of range for a rank-2 tensor"):
            gr.add(op, [x], {"dim": [7]})
        with pytest.raises(IndexError):  # what torch says for the same call
            getattr(torch, op)(torch.randn(3, 4), dim=[7])
    assert gr.add("sum", [x], {"dim": [-2]}).out.type.shape == (4,)


class Bf16RoundTrip(torch.nn.Module):  # reduced from fuzz seed 1000109 (2 ops)
    def forward(self, x0):
        return (x0.to(torch.bfloat16).to(torch.float32),)


class MmBf16Cast(torch.nn.Module):  # reduced from fuzz seed 1000061 (6 ops)
    def forward(self, x0, x1, x2):
        v3 = torch.add(torch.mm(x2, x0.permute([1, 0])), x1)
        return (v3.reshape([2, 5, 2, 7]).to(torch.bfloat16).to(torch.float32), v3.to(torch.bfloat16))


def _exact(model, *inputs):
    import tilecraft

    torch._dynamo.reset()
    compiled = tilecraft.compile(model)
    with torch.no_grad():
        got, expected = compiled(*inputs), model(*inputs)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g, e, rtol=0, atol=0)  # a cast is exact: same rounding as eager
    assert compiled.report.graphs[0].kernels, "expected generated kernels"


def test_bf16_cast_rounds_to_nearest_even():
    g = torch.Generator().manual_seed(0)
    _exact(Bf16RoundTrip(), torch.randn(257, generator=g) * 3)


def test_matmul_epilogue_bf16_cast_and_store():
    g = torch.Generator().manual_seed(1000061000)
    _exact(MmBf16Cast(), torch.randn(7, 6, generator=g), torch.randn(7, generator=g), torch.randn(20, 6, generator=g))


class GemvShapes(torch.nn.Module):  # seeds 1000001 (M=1), 1000026 (K=1), 1000202 (N=1), 1000221 (slice), 3000011
    def forward(self, x, w, b, k1a, k1b, qa, qb, s, one):
        y1 = torch.sigmoid(torch.mm(x.unsqueeze(0), w.permute(1, 0)) + b)  # [1, 7]
        y2 = torch.tanh(torch.addmm(b, k1a, k1b))  # [5, 7], K = 1
        y3 = torch.bmm(qa, qb.permute(0, 2, 1)) * 0.25  # [3, 1, 1]
        y4 = torch.amin(torch.minimum(s, s * 0.5)[1:2], dim=[0], keepdim=True).to(torch.float16).neg()
        y5 = torch.relu(torch.mm(one.expand([8]).unsqueeze(0), w.permute(1, 0)) + b)  # one broadcast element
        return y1, y2, y3, y4, y5


def test_size_one_block_dims_run_as_kernels():
    import logging

    import tilecraft
    from tilecraft.fuzz.oracle import tilecraft_warnings

    g = torch.Generator().manual_seed(3)
    args = [torch.randn(s, generator=g) for s in ((8,), (7, 8), (7,), (5, 1), (1, 7), (3, 1, 5), (3, 1, 5), (4,), (1,))]
    model = GemvShapes()
    torch._dynamo.reset()
    with torch.no_grad(), tilecraft_warnings() as warnings:
        compiled = tilecraft.compile(model)
        got, expected = compiled(*args), model(*args)
    assert not warnings, warnings  # no launch failed, nothing fell back to torch
    assert_close(got, expected)
    templates = sorted(k.template for k in compiled.report.graphs[0].kernels)
    assert templates.count("matmul") == 4 and "reduction" in templates, templates
    assert logging.getLogger("tilecraft").propagate  # the warning collector restored the logger
