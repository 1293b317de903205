"""Fusion rules, one test per rule: which ops become one kernel (and of which template), results against eager.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft

from tilecraft.models import RMSNorm
from tilecraft.testing import assert_matmul_configs_agree, seeded
from tilecraft.testing import compile_and_check as run
from tilecraft.testing import randn as r


def test_pointwise_chain_with_broadcast_cast_where_compare_is_one_kernel():
    def f(x, b, y):
        z = torch.where(x > 0, x * b, torch.sigmoid(y)) + 0.5
        return (z.to(torch.bfloat16) * 2).float() - (x < b).float()

    (k,) = run(f, r(7, 13), r(13, seed=1), r(1, 13, seed=2), n_kernels=1)
    assert k.template == "pointwise" and "pointwise-chain" in k.info["rules"]


def test_rmsnorm_as_torch_ops_is_one_kernel():
    m = RMSNorm(37).eval()
    m.weight.data = r(37, seed=3)
    (k,) = run(m, r(5, 37), n_kernels=1)
    assert k.template == "reduction" and {"reduction-prologue", "reduction-epilogue"} <= set(k.info["rules"])


@pytest.mark.parametrize("fn", [lambda x: torch.softmax(x, -1), lambda x: F.log_softmax(x, 0),
                                lambda x: torch.softmax(x * 0.5 + 1, 1)])
def test_softmax_is_one_kernel(fn):
    run(fn, r(6, 29), n_kernels=1, templates=["reduction"])


@pytest.mark.parametrize("n", [2, 5])
def test_row_result_broadcast_along_columns_is_not_a_reduction_epilogue(n):
    """A squeezed row sum [R] read by an [R, C] op is indexed by the column (broadcasting aligns from the right):
    it cannot be the reduction's epilogue, at R == C either (GPU fuzz repro 53e4f96380 fell back to torch)."""
    def f(x0, x1):
        return ((x0 - torch.sum(x1, dim=1)).unsqueeze(0), x1 - torch.sum(x1, dim=1, keepdim=True),
                x0 - torch.sum(x0, dim=1))  # the last: joins as a sibling reading the same x0 (the GPU repro)

    c = tilecraft.compile(f)
    x0, x1 = r(n, n), r(n, n, seed=1)
    with torch.no_grad():
        for got, want in zip(c(x0, x1), f(x0, x1)):
            torch.testing.assert_close(got, want)
    assert not c.report.fell_back(), c.report.fell_back()
    rules = [k.info["rules"] for k in c.report.graphs[0].kernels]
    assert any("reduction-epilogue" in x for x in rules)  # the keepdim row result still fuses


def test_softmax_written_as_ops_is_one_kernel():
    def f(x):
        e = torch.exp(x - x.amax(-1, keepdim=True))
        return e / e.sum(-1, keepdim=True)

    (k,) = run(f, r(4, 19), n_kernels=1)
    assert "multi-reduction" in k.info["rules"]


def test_linear_bias_gelu_is_one_kernel_2d_and_3d():
    lin = nn.Linear(24, 40).eval()
    (k,) = run(lambda x: F.gelu(lin(x)), r(6, 24), n_kernels=1)
    assert k.template == "matmul" and "matmul-epilogue" in k.info["rules"]
    run(lambda x: F.gelu(lin(x)), r(2, 3, 24), n_kernels=1, templates=["matmul"])  # via sink_views


def test_permute_feeding_matmul_has_no_copy_kernel():
    run(lambda a, b: a.permute(1, 0) @ b, r(20, 17), r(20, 9, seed=1), templates=["matmul"])
    run(lambda a, b: torch.bmm(a.transpose(1, 2), b), r(3, 8, 5), r(3, 8, 6, seed=1), templates=["matmul"])


def test_pointwise_prologue_on_matmul_operand():
    (k,) = run(lambda q, kk: (q * 0.125) @ kk.transpose(-1, -2).to(torch.float32), r(3, 9, 20), r(3, 11, 20, seed=1),
               n_kernels=1)
    assert "matmul-prologue" in k.info["rules"]


def test_residual_and_scale_epilogue():
    w = r(16, 12)
    run(lambda x, res: (x @ w.t()) * 0.5 + res, r(10, 12), r(10, 16, seed=2), n_kernels=1)


def test_no_cycle_and_no_duplicated_reduction():
    def f(x):
        s = x.sum(-1, keepdim=True)  # used twice: must be computed once
        y = torch.relu(x - s)
        return y * s, y.amax(-1)

    ks = run(f, r(4, 11))
    assert sum(k.info["ops"].count("sum") for k in ks) == 1


def test_cat_embedding_and_creation_ops_fuse_as_index_arithmetic():
    def rope_like(q, cos):
        q1, q2 = q[..., :4], q[..., 4:]
        return q * cos + torch.cat((-q2, q1), dim=-1) * torch.sin(cos)

    run(rope_like, r(2, 3, 8), r(3, 8, seed=1), n_kernels=1)
    emb = nn.Embedding(20, 6)
    ids = torch.randint(0, 20, (3, 5), generator=seeded(2))
    run(lambda i: emb(i) * 2 + torch.arange(6) + torch.full((6,), 0.5), ids, n_kernels=1)
    run(lambda x: torch.cat([x, torch.zeros(2, 3)], 0) + torch.ones(5, 3), r(3, 3), n_kernels=1)


def test_gather_index_select_and_index_fuse():
    x = r(5, 7)
    i = torch.randint(0, 7, (5, 3), generator=seeded(4))
    j = torch.tensor([4, -1, 0, 2])  # negative indices count from the end, as in torch
    run(lambda x, i: torch.gather(x, 1, i) * 2, x, i, n_kernels=1)
    run(lambda x, j: torch.index_select(x, 0, j.abs()).relu(), x, j, n_kernels=1)
    run(lambda x, j: x[j] + 1, x, j, n_kernels=1)


class GatedMLP(nn.Module):
    """down(combine(act(gate(x)), up(x))): SwiGLU with the defaults."""

    def __init__(self, d, h, act=F.silu, combine=torch.mul, bias=False):
        super().__init__()
        self.gate, self.up = nn.Linear(d, h, bias=bias), nn.Linear(d, h, bias=bias)
        self.down = nn.Linear(h, d, bias=False)
        self.act, self.combine = act, combine

    def forward(self, x):
        return self.down(self.combine(self.act(self.gate(x)), self.up(x)))


def dual_mlp_kernels(x, **kw):
    """The gated MLP compiles to a dual kernel (both projections, one stored product) and the down GEMM."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        m = GatedMLP(x.shape[-1], 37, **kw).eval().to(x.dtype)
    # bf16: eager rounds the gate/up results and their product to bf16, the dual kernel keeps them in fp32
    dual, down = run(m, x, n_kernels=2, templates=["matmul", "matmul"], scale=3.0 if x.dtype != torch.float32 else 1)
    assert "matmul-dual" in dual.info["rules"] and dual.info["ops"].count("mm") + dual.info["ops"].count("addmm") == 2
    # two dots in each variant's K loop (grouped and persistent); the [M, h] intermediates stay on chip
    assert dual.source.count("tl.dot(") == 2 * 2 and len(dual.out_positions) == 1
    assert down.info["ops"] == ["mm"]
    return dual


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_gate_and_up_are_one_dual_kernel(dtype):
    dual = dual_mlp_kernels(r(13, 29, dtype=dtype))
    assert dual.shapes == {"B": 1, "M": 13, "N": 37, "K": 29, "G": 2}  # G: two GEMMs (tuner features)
    assert_matmul_configs_agree(dual, seed=2)  # the masks of both accumulators on the ragged shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_swiglu_on_3d_input_is_one_dual_kernel(dtype):
    dual = dual_mlp_kernels(r(3, 7, 23, dtype=dtype))
    assert (dual.shapes["M"], dual.shapes["K"]) == (21, 23)


@pytest.mark.parametrize("act,combine", [(F.gelu, torch.mul), (lambda t: t, torch.add),
                                         (torch.tanh, lambda a, b: a * 0.5 - torch.sigmoid(b))])
def test_geglu_and_other_combinations_are_dual(act, combine):
    dual_mlp_kernels(r(2, 5, 31), act=act, combine=combine)


def test_dual_with_linear_bias():
    dual = dual_mlp_kernels(r(11, 19), bias=True)
    assert dual.info["ops"].count("addmm") == 2


def test_dual_computes_a_shared_prologue_on_a_once():
    w1, w2 = r(24, 31, seed=1), r(24, 31, seed=2)

    def f(x):
        h = torch.tanh(x) * 2  # used only by the two matmuls: computed in the K loop, once for both dots
        return torch.sigmoid(h @ w1) * (h @ w2)

    (k,) = run(f, r(17, 24), n_kernels=1)
    assert {"matmul-dual", "matmul-prologue"} <= set(k.info["rules"]) and k.source.count("tl.where(amask") == 2  # once per variant


def test_same_lhs_matmuls_without_a_combination_stay_separate():
    w1, w2 = r(24, 31, seed=1), r(24, 31, seed=2)
    ks = run(lambda x: (x @ w1, torch.relu(x @ w2)), r(17, 24), n_kernels=2, templates=["matmul", "matmul"])
    assert not any("matmul-dual" in k.info["rules"] for k in ks)


def test_dual_stores_a_matmul_result_that_is_also_an_output():
    w1, w2 = r(24, 31, seed=1), r(24, 31, seed=2)

    def f(x):
        a, b = x @ w1, x @ w2
        return a * torch.sigmoid(b), a, b + 1

    (k,) = run(f, r(17, 24), n_kernels=1)
    assert "matmul-dual" in k.info["rules"] and len(k.out_positions) == 3


def test_dual_never_takes_a_matmul_whose_operand_needs_the_other():
    w1, w2 = r(24, 24, seed=1), r(24, 24, seed=2)
    x = r(24, 24)
    # mm(x, relu(x @ w1) * w2): same A and shapes, but B is computed from the first matmul's result
    ks = run(lambda x: (x @ w1) * (x @ (torch.relu(x @ w1) * w2)), x, n_kernels=2)
    assert not any("matmul-dual" in k.info["rules"] for k in ks)


def _biased_linear_residual_norm(device: str):
    """IR of `h = addmm(b, x, w) + r; (h, layer_norm(h))`, GPT-2's residual seam, with values on `device`."""
    from tilecraft.ir import Graph, TensorType

    g = Graph()
    t = lambda *shape: TensorType(shape, torch.bfloat16, None, device)  # noqa: E731
    x, w, b, r, lw, lb = (g.add_input(t(*s), n) for s, n in [((8, 16), "x"), ((16, 16), "w"), ((16,), "b"),
                                                           ((8, 16), "r"), ((16,), "lw"), ((16,), "lb")])
    mm = g.add("addmm", [b, x, w], {"beta": 1, "alpha": 1}).out
    h = g.add("add", [mm, r]).out
    norm = g.add("layer_norm", [h, lw, lb], {"normalized_shape": [16], "eps": 1e-5}).outputs[0]
    g.outputs = [h, norm]
    return g


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_residual_after_a_biased_matmul_goes_to_the_norm_on_cuda(device):
    """On CUDA (cuBLAS runs the addmm, its bias in the added operand) the residual add joins the LayerNorm's
    prologue: one kernel adds on load and stores the sum and the norm, no epilogue kernel reads the product back.
    On the CPU/interpreter (Triton template) the add stays the matmul's epilogue."""
    from tilecraft.passes.fusion import partition

    groups = [[n.op for n in grp.nodes] for grp in partition(_biased_linear_residual_norm(device))]
    if device == "cuda":
        assert groups == [["addmm"], ["add", "layer_norm"]], groups
    else:
        assert groups == [["addmm", "add"], ["layer_norm"]], groups


def test_residual_after_a_biased_linear_joins_the_norm_end_to_end(monkeypatch):
    """GPT-2's residual seams with matmuls on cuBLAS (the CUDA rule, switched on here for CPU values): each
    residual add after c_proj / the MLP's down projection (addmm, bias in cuBLAS) stays in the norm's shape
    (sink_views leaves it) and joins the next LayerNorm as its prologue (no add-only epilogue kernel); the
    logits match eager."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tilecraft.passes import fusion

    monkeypatch.setattr(fusion, "cublas_gemms", lambda v: True)
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64)).eval()
    ids = torch.randint(0, 100, (2, 8), generator=seeded(1))
    torch._dynamo.reset()
    c = tilecraft.compile(m)
    with torch.no_grad():
        torch.testing.assert_close(c(input_ids=ids, use_cache=False).logits, m(input_ids=ids, use_cache=False).logits)
    ops = [k.info.get("ops") for g in c.report.graphs for k in g.kernels]
    assert sum(o == ["add", "layer_norm"] for o in ops) == 4, ops  # ln_2 of both layers, ln_1 of the second, ln_f
    assert not any(o[0] == "addmm" and "add" in o and "tanh" not in o for o in ops), ops


def test_independent_pointwise_of_other_shapes_reading_a_common_input_are_one_combined_kernel():
    """RoPE's q and k rotations (4 and 2 heads) read the same cos/sin: one launch, a program range per part."""
    def rope(q, k, cos, sin):
        def rot(x):
            return x * cos + torch.cat((-x[..., 4:], x[..., :4]), dim=-1) * sin
        return rot(q), rot(k)

    args = (r(1, 4, 6, 8), r(1, 2, 6, 8, seed=1), r(1, 1, 6, 8, seed=2), r(1, 1, 6, 8, seed=3))
    (k,) = run(rope, *args, n_kernels=1)
    assert "combined" in k.info["rules"] and k.info["parts"] == [[1, 4, 6, 8], [1, 2, 6, 8]]
    assert "_part0(" in k.source and "_part1(" in k.source
    bf = tuple(a.to(torch.bfloat16) for a in args)
    run(rope, *bf, n_kernels=1)


def test_a_pointwise_group_reading_anothers_result_is_not_combined_with_it():
    def f(x, y, c):
        a = x * c + 1  # [3, 8]
        return a, y * c + a[:2, :4].sum()  # [2, 8]: reads a (through a reduction), so it runs after a

    run(f, r(3, 8), r(2, 8, seed=1), r(8, seed=2), n_kernels=3)
    g = lambda x, y, c: (x * c, (y * c)[:, :5] + x[:1, :5])  # noqa: E731 - reads x and c: combined
    (k,) = run(g, r(3, 8), r(2, 8, seed=1), r(8, seed=2), n_kernels=1)
    assert "combined" in k.info["rules"]
