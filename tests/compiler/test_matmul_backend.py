"""The GEMM backend of a matmul group (generated Triton or ATen + a generated epilogue), the schedule record that
picks it, the padding of unaligned GEMMs, and the rule that keeps CUDA-graph outputs a caller holds intact."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import triton

import tilecraft
from tilecraft.compiler import runtime
from tilecraft.passes import default_passes, pad_matmuls
from tilecraft.testing import assert_close
from tilecraft.tuner import PRESETS, ScheduleDB, ScheduleRecord, shape_key


class Mixed(nn.Module):
    """linear+GELU+residual, SwiGLU (a dual GEMM), a bmm, and a matmul fed by a fused prologue."""

    def __init__(self, d=32, h=48):
        super().__init__()
        self.fc = nn.Linear(d, h)
        self.gate, self.up = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)
        self.down = nn.Linear(h, d, bias=False)

    def forward(self, x, r):
        y = F.gelu(self.fc(x)) + r
        z = self.down(F.silu(self.gate(x)) * self.up(x))
        s = torch.softmax(x @ x.transpose(-1, -2), -1) @ x
        return y, z, s, torch.relu(x * 2) @ self.gate.weight.t()


def _matmul_kernels(c):
    return [k for g in c.report.graphs for k in g.kernels if k.template == "matmul"]


@pytest.mark.parametrize("backend", ["triton", "aten"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_backends_match_eager(backend, dtype):
    m = Mixed().to(dtype).eval()
    x, r = torch.randn(2, 8, 32, dtype=dtype), torch.randn(2, 8, 48, dtype=dtype)
    c = tilecraft.compile(m, matmul=backend)
    with torch.no_grad():
        assert_close(c(x, r), m(x, r), msg=backend)
        x2, r2 = torch.randn_like(x), torch.randn_like(r)  # fresh inputs, second call
        assert_close(c(x2, r2), m(x2, r2), msg=backend)
    kernels = _matmul_kernels(c)
    assert len(kernels) >= 4
    got = [k.config["BACKEND"] for k in kernels]
    if backend == "triton":
        assert set(got) == {"triton"}
    else:  # every group whose operands are kernel arguments; the prologue-fed one stays generated
        assert got.count("aten") >= 3 and set(got) <= {"aten", "triton"}
        pro = [k for k in kernels if k.aten is None]
        assert all(k.config["BACKEND"] == "triton" for k in pro)


def test_default_is_generated_in_the_interpreter_and_unknown_backend_is_an_error():
    m = Mixed().eval()
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(torch.randn(2, 8, 32), torch.randn(2, 8, 48))
    assert {k.config["BACKEND"] for k in _matmul_kernels(c)} == {"triton"}
    with pytest.raises(ValueError, match="matmul='cublas'"):
        tilecraft.compile(nn.Linear(4, 4), matmul="cublas")


def test_a_schedule_record_picks_the_backend(tmp_path, monkeypatch):
    m = nn.Sequential(nn.Linear(32, 64), nn.GELU()).eval()
    x = torch.randn(16, 32)
    probe = tilecraft.compile(m)
    with torch.no_grad():
        probe(x)
    (k,) = _matmul_kernels(probe)
    cpu = PRESETS["cpu-interpreter"]
    path = str(tmp_path / "s.sqlite")
    with ScheduleDB(path) as db:
        db.add(ScheduleRecord(k.key, "matmul", shape_key(k.shapes), "float32", cpu.name,
                              cpu.capability_str, triton.__version__, {**k.default_config(), "BACKEND": "aten"},
                              0.01, "ok"))
    torch._dynamo.reset()
    c = tilecraft.compile(m, schedules=path)
    with torch.no_grad():
        assert_close(c(x), m(x))
    (k2,) = _matmul_kernels(c)
    assert k2.key == k.key and k2.config["BACKEND"] == "aten" and k2.info["config_source"] == "database"
    # a record written before backends existed has no BACKEND knob: it means the generated kernel
    with ScheduleDB(path) as db:
        old = {kk: v for kk, v in k.default_config().items() if kk != "BACKEND"}
        db.add(ScheduleRecord(k.key, "matmul", shape_key(k.shapes), "float32", cpu.name, cpu.capability_str,
                              triton.__version__, {**old, "BLOCK_M": 16}, 0.001, "ok"))
    torch._dynamo.reset()
    c = tilecraft.compile(m, schedules=path)
    with torch.no_grad():
        assert_close(c(x), m(x))
    (k3,) = _matmul_kernels(c)
    assert k3.config["BACKEND"] == "triton" and k3.config["BLOCK_M"] == 16


@pytest.mark.parametrize("bias", [True, False])
def test_unaligned_gemm_multiplies_a_padded_weight_and_slices(bias):
    m = nn.Linear(64, 1030, bias=bias).to(torch.bfloat16).eval()  # 1030 * 2 bytes is not a multiple of 16
    passes = [(n, (lambda g: pad_matmuls(g, ("cpu",))) if n == "pad_matmuls" else f)
              for n, f in default_passes()]
    c = tilecraft.compile(m, passes=passes)
    x = torch.randn(2, 8, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        assert_close(c(x), m(x))
        x2 = torch.randn_like(x)
        assert_close(c(x2), m(x2))
    ops = [n.op for n in c.report.graphs[0].graph.nodes]
    assert ops.count("constant_pad_nd") == (2 if bias else 1) and "slice" in ops
    mm = [n for n in c.report.graphs[0].graph.nodes if n.op in ("mm", "addmm")][0]
    assert mm.out.type.shape[-1] == 1032
    w = mm.inputs[-1]  # the weight padded in its own [N, K] layout, read transposed as eager reads it
    assert w.type.shape == (64, 1032) and w.type.strides == (1, 64) and w.producer.op == "permute", w.type
    # on the default device list the CPU graph is left alone
    torch._dynamo.reset()
    c = tilecraft.compile(m)
    with torch.no_grad():
        c(x)
    assert "constant_pad_nd" not in [n.op for n in c.report.graphs[0].graph.nodes]


class _NoGraph:
    """Stands in for torch.cuda.CUDAGraph on the CPU: replay re-runs nothing, so a held output that an
    instance reuses would visibly keep the old values while a fresh instance computes new ones."""

    def replay(self):
        pass


def _graphs_without_replay(monkeypatch) -> list:
    """Make KernelProgram._replay capture _NoGraph instances (every call goes through it, CPU inputs too);
    returns the list that records each capture's `direct` flag."""
    captured = []

    def capture(cls, prog, args, static, warm, direct=False):
        static_in = [a if direct or i in static or not isinstance(a, torch.Tensor) else a.clone()
                     for i, a in enumerate(args)]
        captured.append(direct)
        return cls(_NoGraph(), static_in, prog.run(*static_in), [i for i in range(len(args)) if i not in static],
                   set(), direct)

    monkeypatch.setattr(runtime._GraphInstance, "capture", classmethod(capture))
    monkeypatch.setattr(runtime.KernelProgram, "__call__", lambda self, *a: self._replay(a))
    return captured


def test_graph_outputs_a_caller_holds_are_never_reused(monkeypatch):
    """The liveness rule of KernelProgram._replay, on the CPU: an instance is reused only once nobody holds its
    outputs; with every instance held, a call runs without a graph."""
    captured = _graphs_without_replay(monkeypatch)
    m = Mixed().eval()
    c = tilecraft.compile(m, cuda_graphs=True)
    x, r = torch.randn(2, 8, 32), torch.randn(2, 8, 48)
    with torch.no_grad():
        held = [c(x, r) for _ in range(runtime.MAX_GRAPHS)]
        assert len(captured) == runtime.MAX_GRAPHS  # each call found the earlier outputs held
        extra = c(x, r)  # all held: runs plainly, no new instance
        assert len(captured) == runtime.MAX_GRAPHS
        assert_close(extra, m(x, r))
        del held, extra
        c(x, r)  # outputs dropped: an instance is reused
        assert len(captured) == runtime.MAX_GRAPHS


def test_repeated_inputs_replay_a_direct_instance(monkeypatch):
    """A caller passing the same input tensors again gets an instance captured on them (no copy in); other
    tensors get a copying instance; a direct instance replays only for tensors at its inputs' addresses."""
    captured = _graphs_without_replay(monkeypatch)
    m = Mixed().eval()
    c = tilecraft.compile(m, cuda_graphs=True)
    x, r = torch.randn(2, 8, 32), torch.randn(2, 8, 48)
    with torch.no_grad():
        assert_close(c(x, r), m(x, r))  # first call: a copying instance
        assert captured == [False]
        assert_close(c(x, r), m(x, r))  # the same tensors again: a direct instance on them
        assert captured == [False, True]
        prog = c.report.graphs[0].program
        (d,) = [g for g in prog._graphs if g.direct]
        assert any(t is x for t in d.static_in) and any(t is r for t in d.static_in)  # read in place
        c(x, r)
        assert captured == [False, True]  # replayed, not captured again
        y = torch.randn(2, 8, 32)
        args = list(d.static_in)
        assert d.fits(args)
        for other in (y, x.clone()):  # another tensor, or the same values elsewhere: not the captured tensor
            assert not d.fits([other if t is x else t for t in args])
        c(y, r)  # another tensor: the copying instance (it fits any input)
        assert captured == [False, True]


def test_replay_sorts_its_arguments_once_and_still_sees_a_changed_parameter(monkeypatch):
    """A replay's host work is on every call of a decode loop: which arguments are parameters is worked out once
    per argument count (a quantized LLaMA passes ~200 parameters; testing each position against a list of them
    cost ~0.15 ms per call), and a parameter changed in place still means a new capture."""
    captured = _graphs_without_replay(monkeypatch)
    m = Mixed().eval()
    c = tilecraft.compile(m, cuda_graphs=True)
    x, r = torch.randn(2, 8, 32), torch.randn(2, 8, 48)
    with torch.no_grad():
        assert_close(c(x, r), m(x, r))
        prog = c.report.graphs[0].program
        (n, (static, dynamic)), = prog._arg_positions.items()
        assert static == list(prog.static_inputs) and len(static) == len(list(m.parameters()))
        assert len(dynamic) == 2 and not set(static) & set(dynamic) and n == len(static) + 2
        c(x, r)
        c(x, r)
        assert len(captured) == 2 and len(prog._arg_positions) == 1
        next(m.parameters()).add_(1.0)  # in place: its version moves
        assert_close(c(x, r), m(x, r))
        assert len(captured) == 3
    prog.static_inputs = prog.static_inputs  # (re)assigned by the backend: worked out again on the next call
    assert prog._arg_positions == {}


def test_a_failed_capture_falls_back_to_plain_launches(monkeypatch, caplog):
    """A graph that cannot be captured (a host sync, say) runs its kernels one by one from then on, with one
    warning, and its results stay right."""
    calls = []

    def capture(cls, prog, args, static, warm, direct=False):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(runtime._GraphInstance, "capture", classmethod(capture))
    monkeypatch.setattr(runtime, "on_cuda", lambda args: True)  # the CPU stands in for the GPU here
    m = Mixed().eval()
    c = tilecraft.compile(m)  # default: graphs for inference on CUDA
    with torch.no_grad():
        for _ in range(3):
            x, r = torch.randn(2, 8, 32), torch.randn(2, 8, 48)
            assert_close(c(x, r), m(x, r))
    assert len(calls) == 1 and c.report.graphs[0].program._graph_refused
    assert sum("CUDA graph capture failed" in rec.message for rec in caplog.records) == 1


def test_compile_ahead_warms_what_each_backend_launches():
    """codegen/compile.py compiles a GEMM kernel's own source on the Triton backend, and only its generated
    epilogue on the ATen backend (cuBLAS needs no compile)."""
    from tilecraft.codegen.compile import plan_jobs

    m = Mixed().eval()
    for backend in ("triton", "aten"):
        torch._dynamo.reset()
        c = tilecraft.compile(m, matmul=backend)
        with torch.no_grad():
            c(torch.randn(2, 8, 32), torch.randn(2, 8, 48))
        kernels = c.report.graphs[0].kernels
        units = [k for job in plan_jobs(kernels) for k in job.kernels]
        mm = [k for k in kernels if k.template == "matmul"]
        if backend == "triton":
            assert all(k in units for k in mm)
        else:
            on_aten = [k for k in mm if k.config["BACKEND"] == "aten"]
            assert on_aten and not any(k in units for k in on_aten)
            assert all(k.aten.epilogue in units for k in on_aten if k.aten.epilogue is not None)


class Residual(nn.Module):
    """Residual adds after a projection (LLaMA's o_proj/down_proj) and after a bmm."""

    def __init__(self, d=32, bias=False):
        super().__init__()
        self.proj = nn.Linear(d, d, bias=bias)

    def forward(self, x, y):
        return x + self.proj(x), torch.bmm(x, y) + x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_add_folds_into_addmm_without_an_epilogue_kernel(dtype):
    """On the ATen backend `mm(a, b) + r` runs as addmm(r, a, b) (baddbmm for bmm): one cuBLAS call writes the
    sum, no generated epilogue kernel runs, and the results match eager."""
    m = Residual().to(dtype).eval()
    x, y = torch.randn(2, 8, 32, dtype=dtype), torch.randn(2, 32, 32, dtype=dtype)
    c = tilecraft.compile(m, matmul="aten")
    with torch.no_grad():
        assert_close(c(x, y), m(x, y))
        x2, y2 = torch.randn_like(x), torch.randn_like(y)
        assert_close(c(x2, y2), m(x2, y2))
    kernels = c.report.graphs[0].kernels
    assert [k.template for k in kernels] == ["matmul", "matmul"], [k.name for k in kernels]
    for k in kernels:
        assert k.info["ops"][-1] == "add" and k.config["BACKEND"] == "aten"
        assert k.aten.residual is not None and k.aten.epilogue is None and k.compile_units() == []
    assert {n.op for n, _, _ in (k.aten.mms[0] for k in kernels)} == {"mm", "bmm"}


def test_residual_add_after_a_biased_linear_keeps_its_epilogue():
    """addmm already holds the bias: the residual add stays a generated epilogue (and matches eager)."""
    m = Residual(bias=True).eval()
    x, y = torch.randn(2, 8, 32), torch.randn(2, 32, 32)
    c = tilecraft.compile(m, matmul="aten")
    with torch.no_grad():
        assert_close(c(x, y), m(x, y))
    (lin,) = [k for k in c.report.graphs[0].kernels if "addmm" in k.info["ops"]]
    assert lin.aten.residual is None and lin.aten.epilogue is not None


class Donor(nn.Module):
    """A residual computed by a kernel: dead after the add (`later=False`), or read again after it."""

    def __init__(self, later: bool, d=32):
        super().__init__()
        self.proj, self.later = nn.Linear(d, d, bias=False), later

    def forward(self, x, z):
        h = x * 2
        n = h.mean(-1)  # h is stored (a reduction reads it too), not recomputed in the matmul's kernel
        y = h + self.proj(z)
        return (y, n, (y * h).sum(-1)) if self.later else (y, n)  # (y * h).sum: a kernel after the matmul

@pytest.mark.parametrize("later", [False, True])
def test_folded_residual_writes_into_a_dead_residual_buffer_only(later):
    """A residual that nothing reads after the add gives its buffer to the sum (in-place addmm_, no copy of it);
    one read later, or a graph input (the caller's tensor), keeps its own; results match eager either way."""
    m = Donor(later).to(torch.bfloat16).eval()
    x, z = torch.randn(2, 8, 32, dtype=torch.bfloat16), torch.randn(2, 8, 32, dtype=torch.bfloat16)
    x0, z0 = x.clone(), z.clone()
    c = tilecraft.compile(m, matmul="aten")
    with torch.no_grad():
        for _ in range(2):
            assert_close(c(x, z), m(x, z))
    assert torch.equal(x, x0) and torch.equal(z, z0)
    (step,) = [s for s in c.report.graphs[0].program.steps if getattr(s, "kernel", None) is not None
               and s.kernel.template == "matmul"]
    assert step.kernel.aten.residual is not None and step.kernel.aten.donation is not None
    assert (step.plan[2] is None) == later


def test_graph_input_residual_is_never_written():
    m = Residual().to(torch.bfloat16).eval()
    x, y = torch.randn(2, 8, 32, dtype=torch.bfloat16), torch.randn(2, 32, 32, dtype=torch.bfloat16)
    x0 = x.clone()
    c = tilecraft.compile(m, matmul="aten")
    with torch.no_grad():
        assert_close(c(x, y), m(x0, y))
    assert torch.equal(x, x0)
    assert all(s.plan[2] is None for s in c.report.graphs[0].program.steps if getattr(s, "plan", None))


@pytest.mark.parametrize("act,fused", [("gelu_new", True), ("tanh", True), ("exact", False), ("relu", False)])
def test_tanh_gelu_epilogue_is_recognised_for_cublaslt(act, fused):
    """On CUDA a biased linear whose epilogue computes GELU's tanh form (GPT-2's gelu_new written out in ops, or
    F.gelu(approximate="tanh")) is planned as one `_addmm_activation(use_gelu=True)` (cuBLASLt's GELU epilogue,
    the tanh form) with no epilogue kernel; exact GELU and other activations keep their generated epilogue.
    (Worked out on the CPU on a graph marked CUDA; the GPU run is bench/gpu_check.py's gelu_epilogue_checks.)"""
    import copy

    import transformers.activations as A

    from tilecraft.codegen import build_kernel
    from tilecraft.ir import TensorType, is_view
    from tilecraft.passes import default_passes, run_passes
    from tilecraft.passes.fusion import partition

    fn = {"gelu_new": A.NewGELUActivation(), "tanh": nn.GELU(approximate="tanh"), "exact": nn.GELU(),
          "relu": nn.ReLU()}[act]
    m = nn.Sequential(nn.Linear(32, 64), fn).to(torch.bfloat16).eval()
    torch._dynamo.reset()
    c = tilecraft.compile(m, passes=[])
    with torch.no_grad():
        c(torch.randn(4, 32, dtype=torch.bfloat16))
    g = copy.deepcopy(c.report.graphs[0].graph)
    for v in g.values():
        t = v.type
        if isinstance(t, TensorType):
            v.type = TensorType(t.shape, t.dtype, t.strides, "cuda")
    g = run_passes(g, default_passes(), None, check=False)
    (grp,) = [x for x in partition(g) if x.kind == "matmul"]
    outs = []
    for v in g.outputs:
        while is_view(v.producer):
            v = v.producer.inputs[0]
        outs.append(v)
    kernel, _ = build_kernel(grp, outs, "k")
    assert kernel.aten is not None
    assert (kernel.aten.gelu is not None) == fused and (kernel.aten.epilogue is None) == fused


@pytest.mark.parametrize("wins", [True, False, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sibling_gemms_run_as_one_batched_call_over_aliased_weights(monkeypatch, wins, dtype):
    """SwiGLU's gate and up (a dual GEMM group) through ATen: one bmm over a [2, K, N] view that aliases the
    two weights (no stacked copy) when the device measured it faster, else two mms; both match eager. (None:
    the real measurement, on the CPU's clock.)"""
    from tilecraft.codegen import matmul

    calls, measure = [], matmul.sibling_gemm_wins
    monkeypatch.setattr(matmul, "sibling_gemm_wins",
                        lambda a, bs, fn: calls.append(len(bs)) or (measure(a, bs, fn) if wins is None else wins))
    m = Mixed().to(dtype).eval()
    x, r = torch.randn(2, 8, 32, dtype=dtype), torch.randn(2, 8, 48, dtype=dtype)
    c = tilecraft.compile(m, matmul="aten")
    with torch.no_grad():
        assert_close(c(x, r), m(x, r))
        m.gate.weight.mul_(-1.5)  # weights changed in place: the alias reads them (no stale copy)
        x2, r2 = torch.randn_like(x), torch.randn_like(r)
        assert_close(c(x2, r2), m(x2, r2))
    (dual,) = [k for k in _matmul_kernels(c) if k.aten is not None and k.aten.siblings]
    assert calls and set(calls) == {2}
    ptrs, (order, view), kept = dual.aten._alias
    assert view.data_ptr() == min(m.gate.weight.data_ptr(), m.up.weight.data_ptr())
    assert set(ptrs) == {m.gate.weight.data_ptr(), m.up.weight.data_ptr()}
    for i, j in enumerate(order):  # entry i of the view is sibling j's [K, N] operand, element for element
        assert torch.equal(view[i], kept[j])


def test_stacked_alias_needs_equal_spacing_and_one_layout():
    from tilecraft.codegen.matmul import stacked_alias

    a, b = torch.randn(8, 4), torch.randn(8, 4)
    order, view = stacked_alias([b, a])
    assert view.shape == (2, 8, 4) and view.stride()[1:] == (4, 1)
    assert torch.equal(view[order.index(0)], b) and torch.equal(view[order.index(1)], a)
    block = torch.randn(3, 8, 4)
    assert torch.equal(stacked_alias([block[2], block[0], block[1]])[1], block)  # equally spaced: three
    uneven = torch.randn(40)
    assert stacked_alias([uneven[0:8].view(2, 4), uneven[8:16].view(2, 4), uneven[32:40].view(2, 4)]) is None
    assert stacked_alias([a, b.t().contiguous().t()]) is None  # other strides
    assert stacked_alias([a, b.half()]) is None
