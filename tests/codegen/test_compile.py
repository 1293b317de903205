"""Parallel compilation before the first launch: jobs deduplicated by source, config and dtypes, run on a thread
pool with per-job errors; a no-op on the interpreter. The CUDA tests run on the GPU machine only
(`TRITON_INTERPRET=0 python -m pytest tests/codegen/test_compile.py`)."""
import threading

import pytest
import torch
import torch.nn as nn

import tilecraft
from tilecraft.codegen import ArgSpec, Kernel
from tilecraft.codegen.compile import Job, compile_kernels, plan_jobs, run_jobs
from tilecraft.codegen.kernel import interpreting
from tilecraft.testing import assert_close, seeded

on_gpu = pytest.mark.skipif(interpreting() or not torch.cuda.is_available(), reason="needs CUDA without the interpreter")


def program(model, *inputs):
    """Compile and run model; return (its kernel program, output, eager output)."""
    c = tilecraft.compile(model)
    with torch.no_grad():
        got, expected = c(*inputs), model(*inputs)
    (graph,) = c.report.graphs
    return graph.program, got, expected


def mlp(device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 16), nn.GELU()).eval().to(device)


def test_jobs_are_deduplicated_by_source_config_and_dtypes():
    prog, got, expected = program(mlp(), torch.randn(4, 16, generator=seeded(1)))
    assert_close(got, expected)
    a, b = prog.kernels
    (job,) = plan_jobs([a, b])  # the two layers: one compile
    assert job.kernels == [a, b]
    b.config = {**b.config, "num_warps": 2 if a.config["num_warps"] != 2 else 4}
    assert [j.kernels for j in plan_jobs([a, b])] == [[a], [b]]  # another config is another compile

    prog, _, _ = program(lambda x: torch.relu(x) * 2, torch.randn(0, 4))
    assert prog.kernels and plan_jobs(prog.kernels) == []  # a launch over no elements never happens


def test_compile_is_a_no_op_on_the_interpreter():
    prog, _, _ = program(mlp(), torch.randn(4, 16, generator=seeded(1)))
    assert interpreting() and compile_kernels(prog.kernels, {"cuda"}) == {}


def test_jobs_run_concurrently_and_errors_stay_with_their_job():
    jobs = [Job((name,)) for name in "abc"]
    barrier = threading.Barrier(3, timeout=30)  # passes only when three jobs run at once
    seen = []

    def work(job):
        barrier.wait()
        seen.append(threading.current_thread().name)
        if job.key == ("b",):
            raise ValueError("b does not compile")

    errors = run_jobs(jobs, work, workers=3)
    assert list(errors) == [1] and str(errors[1]) == "b does not compile"
    assert len(set(seen)) == 3 and all(n.startswith("tilecraft-compile") for n in seen)
    assert all(j.seconds > 0 for j in jobs)

    order = []
    assert run_jobs(jobs, lambda job: order.append(job.key[0]), workers=1) == {}
    assert order == ["a", "b", "c"]  # one worker: in order


def test_progress_bar_on_request(monkeypatch, capfd):
    jobs = [Job((i,)) for i in range(3)]
    monkeypatch.setenv("TILECRAFT_PROGRESS", "1")
    run_jobs(jobs, lambda job: None, workers=2)
    assert "tilecraft: compiling kernels" in capfd.readouterr().err
    monkeypatch.setenv("TILECRAFT_PROGRESS", "0")
    run_jobs(jobs, lambda job: None, workers=2)
    assert capfd.readouterr().err == ""


@on_gpu
def test_cuda_kernels_are_compiled_before_the_first_launch():
    x = torch.randn(64, 16, generator=seeded(1)).cuda()
    model = mlp("cuda")
    c = tilecraft.compile(model)
    with torch.no_grad():
        c(x)  # compile (kernels are compiled when the program is built) and run once
    (graph,) = c.report.graphs
    ks = graph.program.kernels
    caches = [k.fn.device_caches[torch.cuda.current_device()][0] for k in ks]
    sizes = [len(cache) for cache in caches]
    assert sizes == [1, 1] and caches[0] is caches[1]  # one compile served both layers, and no launch compiled again
    with torch.no_grad():
        assert_close(c(x), model(x))
    assert [len(cache) for cache in caches] == sizes


@on_gpu
def test_a_kernel_that_does_not_compile_is_reported_alone():
    src = ("import triton\nimport triton.language as tl\n\n\n@triton.jit\ndef broken(out0_ptr, XBLOCK: tl.constexpr):\n"
           "    tl.store(out0_ptr + tl.arange(0, XBLOCK), tl.no_such_function(1.0))\n")
    good = ("import triton\nimport triton.language as tl\n\n\n@triton.jit\ndef fine(out0_ptr, XBLOCK: tl.constexpr):\n"
            "    tl.store(out0_ptr + tl.arange(0, XBLOCK), tl.full([XBLOCK], 1.0, tl.float32))\n")

    def kernel(source, fn_name):
        return Kernel(fn_name, "pointwise", source, fn_name, [ArgSpec((16,), (1,), torch.float32, True)],
                      grid=lambda c: (1,), shapes={"numel": 16}, dtype=torch.float32,
                      config={"XBLOCK": 16, "num_warps": 1})

    bad, ok = kernel(src, "broken"), kernel(good, "fine")
    failed = compile_kernels([bad, ok], {"cuda"})
    assert list(failed) == [id(bad)]
    out = torch.zeros(16, device="cuda")
    ok.launch([out])
    assert out.eq(1).all()


def test_only_errors_from_triton_s_compiler_condemn_a_kernel(tmp_path):
    """A real Triton frontend error (lowered for sm90 without a GPU) counts; an error elsewhere does not."""
    import importlib.util

    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction

    from tilecraft.codegen.compile import from_triton_compiler

    path = tmp_path / "broken_kernel.py"
    path.write_text("import triton.language as tl\n\n\ndef broken(out_ptr, XBLOCK: tl.constexpr):\n"
                    "    tl.store(out_ptr + tl.arange(0, XBLOCK), tl.no_such_function(1.0))\n")
    spec = importlib.util.spec_from_file_location("broken_kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    src = ASTSource(JITFunction(mod.broken), {"out_ptr": "*fp32", "XBLOCK": "constexpr"}, {(1,): 16})
    opts = backend.parse_options({})
    ctx = ir.context()
    ir.load_dialects(ctx)
    backend.load_dialects(ctx)
    with pytest.raises(Exception) as info:
        src.make_ir(target, opts, backend.get_codegen_implementation(opts), backend.get_module_map(), ctx)
    assert "no_such_function" in str(info.value) and from_triton_compiler(info.value)
    with pytest.raises(TypeError) as info:
        Job()  # an error of ours (a missing argument), not of Triton's compiler
    assert not from_triton_compiler(info.value)
