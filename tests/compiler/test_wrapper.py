"""The lean launch path (compiler/wrapper.py): the generated wrapper against eager and the step-by-step path on
fresh inputs, buffer frees, parameters changed in place, kernels failing at launch, inputs of another layout."""
import weakref

import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.models import TransformerBlock, tiny_hf_models
from tilecraft.testing import assert_close, seeded
from tilecraft.testing import randn as r


@pytest.fixture(autouse=True)
def _lean_on(monkeypatch):
    """The lean path is opt-in (TILECRAFT_LEAN_LAUNCH=1) until measured on a GPU; these tests exercise it."""
    monkeypatch.setenv("TILECRAFT_LEAN_LAUNCH", "1")


def programs(c):
    return [g.program for g in c.report.graphs if g.program is not None]


def check_three_calls(model, make_input, scale=1.0):
    """Calls 2 and 3 run the wrapper on fresh inputs: equal to the step-by-step path, close to eager."""
    lean, steps = tilecraft.compile(model), tilecraft.compile(model, lean_launch=False)
    with torch.no_grad():
        for i in range(3):
            kw = make_input(i)
            got, ref, want = lean(**kw), steps(**kw), model(**kw)
            got, ref, want = (o[0] if isinstance(o, (tuple, list)) or hasattr(o, "logits") else o
                              for o in (got, ref, want))
            assert torch.equal(got, ref), f"call {i}: the wrapper differs from the step-by-step path"
            assert_close(got, want, scale=scale)
    assert all(p._lean is not None for p in programs(lean)), "every program should run through its wrapper"
    assert all(p._lean is None for p in programs(steps))
    return lean


def test_transformer_block_wrapper_matches():
    m = TransformerBlock(d=32, heads=4).eval()
    c = check_three_calls(m, lambda i: {"x": r(2, 8, 32, seed=i)})
    src = programs(c)[0]._lean_source
    assert "L" in src and "del " in src and "as_strided(" in src  # launches, frees, views


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_hf_wrapper_matches(name):
    model = tiny_hf_models()[name]
    check_three_calls(model, lambda i: {"input_ids": torch.randint(0, 100, (2, 8), generator=seeded(i)),
                                        "use_cache": False})


def test_views_and_inputs_of_another_layout():
    """Views of inputs and of kernel outputs; a transposed input on call 3 fails the guard: step by step, exact."""
    w = r(8, 6, seed=3)

    def fn(x):
        y = torch.softmax(x.transpose(0, 1) @ w, -1)
        return y[:, 1:4] * 2, y.reshape(-1)[::2]

    c = tilecraft.compile(fn)
    for i, x in enumerate([r(8, 5), r(8, 5, seed=1), r(5, 8, seed=2).t()]):
        got = c(x)
        for g, e in zip(got, fn(x)):
            assert_close(g, e)
    assert programs(c)[0]._lean is not None


def test_wrapper_frees_each_intermediate_after_its_last_use():
    """Every kernel output is gone (weakref dead) by the launch after the step of its last use."""
    m = TransformerBlock(d=32, heads=4).eval()
    x = r(2, 8, 32)
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(x)
        prog = programs(c)[0]
        assert prog._lean is not None
        last = {vid: i for i, f in enumerate(prog.frees) for vid in f}
        born, late = {}, []
        for j, s in enumerate(prog.steps):
            if not hasattr(s, "kernel"):
                continue

            def launch(tensors, config=None, j=j, s=s, f=s.kernel.launch):
                late.extend((vid, j) for vid, ref in born.items() if last.get(vid, 10**9) < j and ref() is not None)
                f(list(tensors), config)
                for v, t in zip(s.values, tensors):
                    if any(v is o for o in s.outputs) and id(v) in last:
                        born[id(v)] = weakref.ref(t)
            s.kernel.launch = launch
        assert_close(c(x + 1), m(x + 1))
    assert len(born) >= 5 and not late, f"intermediates alive after their last use: {late}"


def test_parameter_changed_in_place_is_seen():
    """A cached parameter-only step (batch-norm fold) and a parameter read directly both see in-place changes."""
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 5))
    m = m.eval()
    with torch.no_grad():
        m[1].running_var.uniform_(0.5, 2)
    c = tilecraft.compile(m)
    x = r(2, 3, 6, 6)
    with torch.no_grad():
        assert_close(c(x), m(x))
        prog = programs(c)[0]
        assert prog._static_steps and prog._lean is not None
        assert_close(c(x + 1), m(x + 1))
        key = prog._cache_key
        m[1].weight.mul_(2)
        m[4].weight.add_(0.5)
        assert_close(c(x), m(x))
        assert prog._cache_key != key  # the fold was redone under the new key
        assert_close(c(x), m(x))


def test_kernel_failing_in_the_wrapper_falls_back(caplog):
    m = TransformerBlock(d=32, heads=4).eval()
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(r(2, 8, 32))
        prog = programs(c)[0]
        step = next(s for s in prog.steps if hasattr(s, "kernel") and s.kernel.template == "reduction")

        def boom(tensors, config=None):
            raise RuntimeError("out of resources")
        step.kernel.launch = boom
        x = r(2, 8, 32, seed=5)
        with caplog.at_level("WARNING", logger="tilecraft"):
            assert_close(c(x), m(x))
        assert step.failed and any("out of resources" in rec.getMessage() for rec in caplog.records)
        assert prog._lean is not None and step.kernel.name not in prog._lean_source  # regenerated without it
        assert_close(c(x + 1), m(x + 1))


def test_lean_launch_env_off_and_explain(monkeypatch):
    text = tilecraft.explain(lambda x: torch.softmax(x, -1) * 2, r(3, 5), print_result=False)
    assert "---- launch wrapper ----" in text and "def run(" in text
    monkeypatch.setenv("TILECRAFT_LEAN_LAUNCH", "0")
    c = tilecraft.compile(lambda x: torch.softmax(x, -1) * 2)
    for i in range(2):
        x = r(3, 5, seed=i)
        assert_close(c(x), torch.softmax(x, -1) * 2)
    assert programs(c)[0]._lean is None


def test_training_forward_through_the_wrapper():
    """Autograd training: the forward program runs through its wrapper; loss and gradients match eager."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    ref = [p.detach().clone() for p in m.parameters()]
    c = tilecraft.compile(m)
    for i in range(3):
        x = r(8, 16, seed=i)
        m.zero_grad()
        c(x).square().mean().backward()
        got = [p.grad.clone() for p in m.parameters()]
        m.zero_grad()
        m(x).square().mean().backward()
        for g, e in zip(got, (p.grad for p in m.parameters())):
            assert_close(g, e)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref))
    assert any(p._lean is not None for p in programs(c))
