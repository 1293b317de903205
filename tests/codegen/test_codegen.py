"""Generated kernels against eager (interpreter): each reduction and edge case of the templates, looped and
single-pass paths, tile configs that must agree, and the kernel source cache.
"""
import math
import os

import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.codegen import cache_dir
from tilecraft.testing import assert_close, assert_matmul_configs_agree, seeded
from tilecraft.testing import compile_and_check as run
from tilecraft.testing import randn as r


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dim", [-1, 0, 1, None])
def test_prod_over_last_and_other_dims(dim, dtype):
    """prod is one registry entry (a PROD fold): one reduction kernel, single pass and looped alike."""
    x = (1 + 0.3 * r(6, 37, 5, seed=7)).to(dtype)  # products of up to ~1000 factors near 1 stay finite
    fn = (lambda t: torch.prod(t * 2 - 1, dim, keepdim=dim == 0)) if dim is not None else (lambda t: t.prod())
    (k,) = run(fn, x, n_kernels=1, templates=["reduction"])
    assert "prod_combine" in k.source
    assert_configs_agree(k, [{"RBLOCK": 4}, {"RBLOCK": 64}])


def test_a_new_reduction_is_one_registry_entry():
    """The reduction template reads only the registry: a reduction registered here (the sum of squares, as a
    SUM fold of x * x) compiles to one kernel that agrees with its torch reference on both paths."""
    from tilecraft.compiler.api import Options
    from tilecraft.compiler.runtime import build_kernel_program
    from tilecraft.ir import REGISTRY, Graph, TensorType, interpret
    from tilecraft.ir.ops import SUM, Reduce, Stat, reduction

    reduction("sum_of_squares", lambda x, dim=None, keepdim=False: (x * x).sum(dim, keepdim), (),
              Reduce((Stat(SUM, ("s",), "{x} * {x}"),), ("{s}",)))
    try:
        g = Graph()
        x = g.add_input(TensorType((6, 300), torch.float32), "x")
        g.outputs = [g.add("sum_of_squares", [x], {"dim": [1]}).out]
        prog = build_kernel_program(g, Options())
        (k,) = prog.kernels
        xs = r(6, 300)
        assert_close(prog(xs), interpret(g, [xs]))
        assert_configs_agree(k, [{"RBLOCK": 64}, {"RBLOCK": 512}])
    finally:
        del REGISTRY["sum_of_squares"]


def assert_configs_agree(k, configs):
    """The kernel gives the same outputs under each config (looped and single-pass reductions)."""
    args = k.make_args(seed=4)
    results = []
    for cfg in configs:
        out = [a.clone() for a in args]
        k.launch(out, {**k.default_config(), **cfg})
        results.append([out[i] for i in k.out_positions])
    for other in results[1:]:
        assert_close(other, results[0])


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


def test_matmul_configs_agree_on_ragged_shapes():
    c = tilecraft.compile(lambda a, b, bias: torch.addmm(bias, a, b).relu())
    c(r(37, 29), r(29, 23, seed=1), r(23, seed=2))
    (k,) = c.report.graphs[0].kernels
    assert_matmul_configs_agree(k, seed=1)


def test_kernel_source_cache_on_disk():
    ks = run(lambda x: torch.cos(x) * 3, r(5))
    files = os.listdir(cache_dir())
    assert any(f.endswith(".py") and open(cache_dir() / f).read() == ks[0].source for f in files)


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


def test_reshape_index_maps_run_by_run():
    """A view's index maps per run of dims with equal products (short offsets, no division for a split), and
    every element it names is the one torch's view holds, for splits, merges, mixed runs and size-1 dims."""
    import itertools
    import random

    from tilecraft.codegen.emit import map_view
    from tilecraft.ir import Graph, TensorType

    def mapped(src, out):
        g = Graph()
        x = g.add_input(TensorType(src, torch.float32), "x")
        node = g.make_node("view", [x], {"size": list(out)})
        names = tuple(f"i{d}" for d in range(len(out)))
        return map_view(node, names)

    assert mapped((16, 32), (2, 8, 4, 8)) == ("(i0 * 8 + i1)", "(i2 * 8 + i3)")
    rng = random.Random(0)
    cases = [((16, 32), (2, 8, 4, 8)), ((2, 8, 4, 8), (16, 32)), ((6, 4), (3, 8)), ((1, 12, 1), (3, 1, 4)),
             ((4, 6), (24,)), ((24,), (2, 3, 4)), ((2, 3, 4), (4, 6))]
    for src, out in cases:
        t = torch.arange(math.prod(src)).reshape(src)
        v = t.reshape(out)
        exprs = mapped(src, out)
        for idx in rng.sample(list(itertools.product(*[range(s) for s in out])), min(40, v.numel())):
            env = {f"i{d}": i for d, i in enumerate(idx)}
            src_idx = tuple(eval(e, {}, env) for e in exprs)
            assert t[src_idx] == v[idx], (src, out, idx, exprs)
