"""The compiled program end to end: models against eager, explain, CUDA-graph and device handling, caching of
parameter-only work, and the runtime's own costs (garbage, launch path).
"""
import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.models import ConvBNReLU, TransformerBlock, tiny_hf_models
from tilecraft.testing import assert_close, seeded
from tilecraft.testing import compile_and_check as run
from tilecraft.testing import randn as r


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



def test_steps_that_create_their_values_are_computed_once():
    """A step with no inputs but parameters (LLaMA's positions from arange and its RoPE cos/sin tables) is as
    static as one on parameters: launched on the first call only; outputs match eager on fresh inputs."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    torch.manual_seed(0)
    m = transformers.LlamaForCausalLM(cfg).eval()
    c = tilecraft.compile(m)
    launched = []
    with torch.no_grad():
        ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(1))
        assert_close(c(ids, use_cache=False).logits, m(ids, use_cache=False).logits)
        prog = c.report.graphs[0].program
        made = {i for i, s in enumerate(prog.steps) if any(n.op == "arange" for n in s.nodes)}
        tables = {i for i, s in enumerate(prog.steps) if {"cos", "sin"} <= {n.op for n in s.nodes}}
        assert made and tables and made | tables <= prog._static_steps
        for i, s in enumerate(prog.steps):
            if hasattr(s, "kernel"):
                s.kernel.launch = (lambda f, i: lambda *a, **k: (launched.append(i), f(*a, **k)))(s.kernel.launch, i)
        for seed in (3, 4):
            ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(seed))
            assert_close(c(ids, use_cache=False).logits, m(ids, use_cache=False).logits)
    assert launched and not set(launched) & (made | tables)
