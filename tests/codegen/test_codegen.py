"""Fusion rules and generated kernels: kernel counts per rule, and results against eager (interpreter)."""
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft
from tilecraft.codegen import cache_dir
from tilecraft.models import ConvBNReLU, RMSNorm, TransformerBlock, tiny_hf_models
from tilecraft.testing import assert_close, seeded


def run(fn, *inputs, n_kernels=None, templates=None, scale=1.0):
    """Compile fn, check against eager on these inputs, return the kernels of its (single) graph."""
    c = tilecraft.compile(fn)
    with torch.no_grad():
        got = c(*inputs)
        expected = fn(*inputs)
    assert_close(got, expected, scale=scale)
    graphs = c.report.graphs
    assert len(graphs) == 1 and graphs[0].error is None, c.report.summary()
    kernels = graphs[0].kernels
    if n_kernels is not None:
        assert len(kernels) == n_kernels, c.report.summary()
    if templates is not None:
        assert sorted(k.template for k in kernels) == sorted(templates), c.report.summary()
    steps = graphs[0].program.steps
    assert not any(getattr(s, "failed", False) for s in steps), "a kernel failed and fell back to torch"
    return kernels


def r(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=seeded(seed)).to(dtype)


# ------------------------------------------------------------------------------------------- rules
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


def test_softmax_written_as_ops_is_one_kernel():
    def f(x):
        e = torch.exp(x - x.amax(-1, keepdim=True))
        return e / e.sum(-1, keepdim=True)

    (k,) = run(f, r(4, 19), n_kernels=1)
    assert "multi-reduction" in k.info["rules"]


def test_layernorm_and_mean_var():
    ln = nn.LayerNorm(24).eval()
    ln.weight.data, ln.bias.data = r(24, seed=4), r(24, seed=5)
    run(ln, r(3, 5, 24), n_kernels=1)
    run(lambda x: (x.mean(1), x.var(1), x.var(dim=(0, 2), correction=0)), r(4, 9, 6), n_kernels=2)


@pytest.mark.parametrize("dim", [0, 1, 2, (0, 2)])
def test_sum_and_max_along_any_dim(dim):
    run(lambda x: (x.sum(dim) * 2, x.amax(dim, keepdim=True)), r(5, 7, 3), n_kernels=1)


@pytest.mark.parametrize("dim", [0, 1, -1, None])
def test_argmax_argmin_and_max_dim(dim):
    x = r(6, 37)
    x[2, 5] = x[2, 9] = 50.0  # ties: the first index wins, as in torch
    fns = [lambda t: torch.argmax(t * 2, dim), lambda t: torch.argmin(t, dim, keepdim=dim is not None)]
    if dim is not None:
        fns.append(lambda t: tuple(torch.max(torch.exp(t) - 1, dim)))
    for fn in fns:
        ks = run(fn, x, n_kernels=1, templates=["reduction"])
        args = ks[0].make_args(seed=3)  # and the looped path agrees with the single pass
        a, b = [t.clone() for t in args], [t.clone() for t in args]
        ks[0].launch(a, {**ks[0].default_config(), "RBLOCK": 64})
        ks[0].launch(b, {**ks[0].default_config(), "RBLOCK": 16})
        for i in ks[0].out_positions:
            torch.testing.assert_close(a[i], b[i])


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


# ------------------------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("shape", [(1,), (13,), (3, 1, 7), (1, 1), (31, 17)])
def test_ragged_and_size_one_shapes(shape):
    run(lambda x: torch.softmax(torch.tanh(x) * 3, -1) + x.sum(-1, keepdim=True), r(*shape))


def test_non_contiguous_and_broadcast_inputs():
    x = r(8, 12)[:, ::2]  # strided view input
    y = r(12, 8, seed=1).t()  # transposed input
    run(lambda a, b: torch.exp(a) + b[:, :6] * a.sum(0), x, y)


def test_zero_dim_and_empty_tensors():
    run(lambda x, s: x * s + s, r(5), torch.tensor(3.0))
    run(lambda s: torch.sigmoid(s) * 2, torch.tensor(0.25))
    run(lambda x: torch.relu(x) + 1, torch.empty(0, 4))


def test_int_and_bool_pointwise():
    i = torch.randint(-5, 5, (6, 7), generator=seeded(1))
    run(lambda a: ((a * 3 + 1) > 2) & (a != 0), i)
    run(lambda a, b: a.float() / 2 + b, i, r(7))


def test_looped_reduction_matches_single_pass():
    """The same kernel with RBLOCK below the row length takes the looped path (and online softmax)."""
    ln = nn.LayerNorm(300).eval()
    for fn in (lambda x: torch.softmax(x, -1), ln, lambda x: x.var(-1) + x.sum(-1)):
        c = tilecraft.compile(fn)
        with torch.no_grad():
            c(r(3, 300))
        for k in c.report.graphs[0].kernels:
            args = k.make_args(seed=4)
            single = [a.clone() for a in args]
            k.launch(single, {**k.default_config(), "RBLOCK": 512})
            looped = [a.clone() for a in args]
            k.launch(looped, {**k.default_config(), "RBLOCK": 64})
            for i in k.out_positions:
                torch.testing.assert_close(looped[i], single[i], rtol=1e-5, atol=1e-5)


def test_matmul_configs_agree_on_ragged_shapes():
    c = tilecraft.compile(lambda a, b, bias: torch.addmm(bias, a, b).relu())
    c(r(37, 29), r(29, 23, seed=1), r(23, seed=2))
    (k,) = c.report.graphs[0].kernels
    assert_matmul_configs_agree(k, seed=1)


def assert_matmul_configs_agree(k, seed):
    """Tiles smaller and larger than the default give the same result (ragged-edge masks)."""
    args = k.make_args(seed=seed)
    ref = [a.clone() for a in args]
    k.launch(ref, k.default_config())
    for cfg in ({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1},
                {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 4}):
        out = [a.clone() for a in args]
        k.launch(out, {**k.default_config(), **cfg})
        for i in k.out_positions:
            assert_close(out[i], ref[i])  # by the output's dtype: summation order differs with BLOCK_K


# ------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformer_block(dtype):
    m = TransformerBlock(d=32, heads=4).eval().to(dtype)
    ks = run(m, r(2, 8, 32, dtype=dtype))
    assert {k.template for k in ks} >= {"reduction", "matmul"}
    assert len(ks) <= 10


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cnn(dtype):
    m = ConvBNReLU().eval().to(dtype)
    run(m, r(2, 3, 12, 12, dtype=dtype))


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hf_models_run_generated_kernels(name, dtype):
    model = tiny_hf_models()[name].to(dtype)
    ids = torch.randint(0, 100, (2, 8), generator=seeded(9))
    kw = {} if name == "bert" else {"use_cache": False}
    c = tilecraft.compile(model)
    with torch.no_grad():
        got = c(input_ids=ids, **kw)[0]
        expected = model(input_ids=ids, **kw)[0]
    # bf16: eager rounds every intermediate to bf16, fused kernels keep fp32 inside a kernel
    assert_close(got, expected, scale=1.0 if dtype == torch.float32 else 3.0)
    kernels = [k for g in c.report.graphs for k in g.kernels]
    assert {k.template for k in kernels} >= {"reduction", "matmul"}
    assert not any(getattr(s, "failed", False) for g in c.report.graphs for s in g.program.steps)


def test_explain_shows_groups_and_source():
    text = tilecraft.explain(lambda x: torch.softmax(x, -1) * 2, r(3, 5), print_result=False)
    assert "---- fused groups ----" in text and "reduction[3,5] over dims [1]" in text
    assert "@triton.jit" in text and "tl.store(" in text


def test_kernel_source_cache_on_disk():
    ks = run(lambda x: torch.cos(x) * 3, r(5))
    files = os.listdir(cache_dir())
    assert any(f.endswith(".py") and open(cache_dir() / f).read() == ks[0].source for f in files)


def test_cuda_graphs_option_on_cpu_runs_kernels_and_says_so(caplog):
    c = tilecraft.compile(lambda x: torch.relu(x) * 2, cuda_graphs=True)
    x = r(9)
    with caplog.at_level("WARNING", logger="tilecraft"):
        assert_close(c(x), torch.relu(x) * 2)
        assert_close(c(x + 1), torch.relu(x + 1) * 2)
    assert sum("cuda_graphs=True needs CUDA inputs" in m.getMessage() for m in caplog.records) == 1
    assert len(c.report.graphs[0].kernels) == 1


def test_kernel_outputs_are_allocated_on_the_inputs_device():
    """Regression (first GPU run): an output that is argument 0 was allocated on the CPU before any input had
    been seen, so every kernel failed on CUDA. Replayed here on the meta device with the launch recorded."""
    c = tilecraft.compile(lambda x, y: torch.softmax(x, -1) + y)
    x, y = r(4, 8), r(4, 8, seed=1)
    c(x, y)
    prog = c.report.graphs[0].program
    seen = []
    for s in prog.steps:
        if hasattr(s, "kernel"):
            s.kernel.launch = lambda tensors: seen.append({t.device.type for t in tensors})
    prog.run(x.to("meta"), y.to("meta"))
    assert seen and all(d == {"meta"} for d in seen)


def test_parameter_only_work_is_cached_until_a_parameter_changes():
    """Folded batch-norm weights depend on parameters alone: computed on the first call, reused after, and
    recomputed when a parameter is modified in place (version counter) — outputs always match eager."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
    with torch.no_grad():
        m[1].running_mean.normal_()
        m[1].running_var.uniform_(0.5, 2)
    c = tilecraft.compile(m)
    x = r(2, 3, 6, 6)
    launched = []
    with torch.no_grad():
        assert_close(c(x), m(x))
        prog = c.report.graphs[0].program
        assert prog._static_steps, "the batch-norm fold should run on parameters alone"
        for s in prog.steps:
            if hasattr(s, "kernel"):
                s.kernel.launch = (lambda f, name: lambda *a, **k: (launched.append(name), f(*a, **k)))(
                    s.kernel.launch, s.kernel.name)
        assert_close(c(x + 1), m(x + 1))
        n_cached = len(launched)
        m[1].weight.mul_(2)  # in place: the fold must be redone
        launched.clear()
        assert_close(c(x), m(x))
        assert len(launched) > n_cached
    with torch.inference_mode():  # no version counters there: nothing cached, still correct
        assert_close(c(x), m(x))


def test_channels_last_decision_needs_a_conv_chain_or_nhwc_input():
    from tilecraft.ir import Graph, TensorType
    from tilecraft.passes.layout import wants_channels_last

    def graph(n_convs, strides=None):
        g = Graph()
        x = g.add_input(TensorType((2, 32, 8, 8), torch.float16, strides, "cuda"), "x")
        w = g.add_input(TensorType((32, 32, 3, 3), torch.float16, None, "cuda"), "w")
        for _ in range(n_convs):
            x = g.add("convolution", [x, w, None], {"stride": [1, 1], "padding": [1, 1], "dilation": [1, 1],
                                                    "transposed": False, "output_padding": [0, 0], "groups": 1}).out
        g.outputs = [x]
        return g

    assert not wants_channels_last(graph(1))
    assert wants_channels_last(graph(2))
    assert wants_channels_last(graph(1, strides=(32 * 64, 1, 8 * 32, 32)))


def test_runtime_calls_leave_no_cyclic_garbage():
    """Regression (GPU runs): a recursive closure in the runtime made a reference cycle per call; the cyclic GC
    then ran full passes over a big process (after Inductor or a tuner ran) and doubled small workloads' time."""
    import gc
    import types

    m = TransformerBlock(32, 4).eval()
    x = r(2, 8, 32)
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(x)
        prog = c.report.graphs[0].program
        for s in prog.steps:
            if hasattr(s, "kernel"):  # the Triton interpreter's own garbage is not the runtime's
                s.kernel.launch = lambda tensors, config=None: None
        seen = []
        run = prog.run
        prog.run = lambda *a: seen.append(a) or run(*a)  # the flat arguments the runtime gets
        c(x)
        del prog.run
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collector finds, to look at it
        try:
            for _ in range(5):  # the runtime alone: Dynamo's guards and tracing are not under test
                prog(*seen[0])
            gc.collect()
            # other tests' leftovers may surface here; the runtime's own garbage would be tilecraft functions
            ours = [o for o in gc.garbage if isinstance(o, types.FunctionType)
                    and o.__module__.startswith("tilecraft")]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not ours, [f.__qualname__ for f in ours]


def test_fast_launch_is_not_turned_off_by_triton_s_empty_hook_chain():
    """Regression: Triton 3.6 keeps an empty HookChain as its launch hook, never None; reading that as "a hook is
    set" turned the direct launch path off on the first repeat launch, on every GPU."""
    import triton

    from tilecraft.codegen.kernel import launch_hooks_active

    assert not launch_hooks_active()
    rt = triton.knobs.runtime
    if hasattr(rt.launch_enter_hook, "add"):
        hook = lambda *a: None  # noqa: E731
        rt.launch_enter_hook.add(hook)
        try:
            assert launch_hooks_active()
        finally:
            rt.launch_enter_hook.remove(hook)
