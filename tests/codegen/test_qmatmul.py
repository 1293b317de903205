"""The quantized-matmul template: quantized linears are `qmatmul` groups whose pointwise epilogue (bias,
activation, residual add) fuses into the GEMV/GEMM kernel; configs come from the schedule database; the kernels
show in the report and in explain. Checked against the quantized model's own dequantized reference."""
import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import triton

import tilecraft
from tilecraft.testing import assert_close, seeded
from tilecraft.tuner import DeviceInfo, ScheduleDB, ScheduleRecord, shape_key


class GatedBlock(nn.Module):
    """x + down(act(up(x))): bias + activation fuse into up's kernel, the residual add into down's."""

    def __init__(self, d=64, h=128, act=F.silu):
        super().__init__()
        self.up, self.down, self.act = nn.Linear(d, h), nn.Linear(h, d, bias=False), act

    def forward(self, x):
        return x + self.down(self.act(self.up(x)))


def _compile(model, scheme, x, **kw):
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize=scheme, **kw)
    with torch.no_grad():
        got, ref = c(x), c.model(x)  # ref: the custom ops' dequantize-then-matmul, eager
    return c, got, ref


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
@pytest.mark.parametrize("shape,dtype,template", [((1, 64), torch.float32, "wq_gemv"),
                                                  ((2, 3, 64), torch.float32, "wq_gemm"),
                                                  ((1, 5, 64), torch.bfloat16, "wq_gemm")])
def test_epilogue_fuses_into_the_quantized_kernel(scheme, shape, dtype, template):
    torch.manual_seed(11)
    model = GatedBlock().eval().to(dtype)
    x = torch.randn(*shape, generator=seeded(12)).to(dtype)
    c, got, ref = _compile(model, scheme, x)
    assert_close(got, ref, msg=f"{scheme} {shape} {dtype}")
    rec = c.report.graphs[0]
    assert not rec.fallbacks and rec.program.groups[0].kind == "qmatmul"
    assert not [s.kernel.name for s in rec.program.steps if getattr(s, "failed", False)]  # no kernel fell back
    kinds = [(g.kind, [n.op for n in g.nodes if n.op != "cast"]) for g in rec.program.groups]  # (bf16 casts)
    op = "wq_linear_int8" if scheme.startswith("int8") else "wq_linear_int4"
    assert kinds == [("qmatmul", [op, "sigmoid", "mul"]), ("qmatmul", [op, "add"])], kinds  # silu decomposed
    assert [k.template for k in rec.kernels] == [template, template]
    assert all(k.info["config_source"] == "default" and k.config["SPLIT_K"] == 1 for k in rec.kernels)
    assert c.report.summary().count(f": {template} (") == 2 and f"kernel k0_qmatmul_{op}_" in c.report.summary()
    text = tilecraft.explain(c, x, print_result=False)
    assert "qmatmul-epilogue" in text and "# EPILOGUE (fused by codegen)" in text and "tl.sigmoid" in text


def test_quantized_kernel_config_comes_from_the_schedule_database(tmp_path):
    torch.manual_seed(13)
    model = GatedBlock().eval()
    x = torch.randn(6, 64, generator=seeded(14))
    c, got, ref = _compile(model, "int4_weight_only:32", x)
    k = c.report.graphs[0].kernels[0]
    tuned = dict(k.config, BLOCK_N=16, BLOCK_K=16)
    assert tuned != k.config
    k.check_config(tuned)
    dev = DeviceInfo.detect()
    with ScheduleDB(tmp_path / "s.sqlite") as db:
        db.add(ScheduleRecord(k.key, k.template, shape_key(k.shapes), "float32", dev.name, dev.capability_str,
                              triton.__version__, tuned, 0.01))
    c2, got2, ref2 = _compile(model, "int4_weight_only:32", x, schedules=str(tmp_path / "s.sqlite"))
    k2 = c2.report.graphs[0].kernels[0]
    assert k2.key == k.key and k2.config == tuned and k2.info["config_source"] == "database"
    assert_close(got2, ref2)
    assert not [s.kernel.name for s in c2.report.graphs[0].program.steps if getattr(s, "failed", False)]


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
def test_split_k_reduces_in_the_kernel_before_the_fused_epilogue(scheme):
    """The GEMM's serial split-K: each split stores a partial tile, the last one sums them and runs the epilogue
    (a non-linear one, so partial sums must never reach it); twice, so the arrival counters were reset."""
    torch.manual_seed(15)
    model = GatedBlock(d=128, h=64).eval()
    x = torch.randn(6, 128, generator=seeded(16))
    c, got, ref = _compile(model, scheme, x)
    prog = c.report.graphs[0].program
    for k in prog.kernels:
        k.config = dict(k.config, SPLIT_K=2 if k.shapes["K"] == 128 else 1, BLOCK_K=32)
    with torch.no_grad():
        for _ in range(2):
            assert_close(c(x), ref)
    assert not [s.kernel.name for s in prog.steps if getattr(s, "failed", False)]
    gemv = tilecraft.quant.make_kernel("int8_weight_only", 1, 64, 128, torch.float32, template="wq_gemv")
    gemv = dataclasses.replace(gemv, info={**gemv.info, "fused": True})  # (make_kernel's object is shared)
    with pytest.raises(Exception, match="SPLIT_K=1"):  # the GEMV's split-K adds atomically: no fused epilogue
        gemv.check_config(dict(gemv.default_config(), SPLIT_K=2))


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_aten_backend_dequantizes_then_multiplies_then_runs_the_epilogue(scheme, dtype):
    """BACKEND "aten" (the GPU default for M >= 256): one Triton kernel dequantizes the weight into a shared
    scratch buffer, ATen multiplies (bias in addmm), the fused ops run as one generated pointwise kernel; a
    residual add alone is addmm's added operand instead (no epilogue kernel)."""
    torch.manual_seed(17)
    model = GatedBlock().eval().to(dtype)
    x = torch.randn(2, 5, 64, generator=seeded(18)).to(dtype)
    c, got, ref = _compile(model, scheme, x)
    prog = c.report.graphs[0].program
    assert all(k.config["BACKEND"] == "triton" and k.aten is not None for k in prog.kernels)  # (interpreter)
    for k in prog.kernels:
        k.config = dict(k.config, BACKEND="aten")
    with torch.no_grad():
        assert_close(c(x), ref, msg=f"{scheme} {dtype}")
    assert not [s.kernel.name for s in prog.steps if getattr(s, "failed", False)]
    up, down = prog.kernels  # up: bias in addmm, silu as a generated epilogue; down: x + ... as addmm(x, ...)
    assert up.aten.epilogue is not None and up.aten.residual is None
    assert down.info["ops"][-1] == "add" and down.aten.epilogue is None and down.aten.residual is not None
    with pytest.raises(Exception, match="BACKEND='cublas'"):
        prog.kernels[0].check_config(dict(prog.kernels[0].config, BACKEND="cublas"))


class ResidualThenRMSNorm(nn.Module):
    """LLaMA's seam: h = x + o_proj(a), then RMSNorm(h) casts h to float32; h is also the next residual."""

    def __init__(self, d=64):
        super().__init__()
        self.o_proj, self.w = nn.Linear(d, d, bias=False), nn.Parameter(torch.randn(d) * 0.1 + 1)

    def forward(self, a, x):
        h = x + self.o_proj(a)
        h32 = h.to(torch.float32)
        normed = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + 1e-6)
        return h, self.w * normed.to(h.dtype)


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
def test_widening_cast_of_the_residual_stays_with_its_readers(scheme):
    """The fp32 cast of a stored residual sum is not fused into the quantized matmul's epilogue (that stores the
    sum twice, once in fp32, and keeps the bias-free `x + q(a)` out of addmm): the matmul group is linear + add,
    its "aten" backend one addmm with x, and RMSNorm's reduction casts on load. Both backends match eager."""
    torch.manual_seed(3)
    model = ResidualThenRMSNorm().eval().to(torch.bfloat16)
    a, x = (torch.randn(2, 5, 64, generator=seeded(i)).to(torch.bfloat16) for i in (4, 5))
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize=scheme)
    with torch.no_grad():
        ref = c.model(a, x)
        for backend in ("triton", "aten"):
            if backend == "aten":
                q.config = dict(q.config, BACKEND=backend)
            got = c(a, x)
            prog = c.report.graphs[0].program
            (q,) = [k for k in prog.kernels if k.template in ("wq_gemm", "wq_gemv")]
            assert q.info["ops"][-1] == "add" and "cast" not in q.info["ops"], q.info["ops"]
            for g, r in zip(got, ref):
                assert_close(g, r, msg=f"{scheme} {backend}")
            assert not [s.kernel.name for s in prog.steps if getattr(s, "failed", False)]
    assert q.aten.residual is not None and q.aten.epilogue is None
    assert any(k.template == "reduction" and "cast" in k.info.get("ops", []) for k in prog.kernels)


def test_folded_residual_takes_a_dead_residual_buffer_in_place():
    """`h + o_proj(a)` with h a generated kernel's result read by nothing later: the "aten" backend's sum is
    written into h's own buffer (Kernel.donation, then `addmm_`), no copy of h into a fresh output first."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.o_proj = nn.Linear(64, 64, bias=False)

        def forward(self, a, x):
            h = x * 2
            n = h.mean(-1)  # h is stored (a reduction reads it too), not recomputed in the matmul's kernel
            return h + self.o_proj(a), n

    torch.manual_seed(6)
    model = M().eval()
    a, x = torch.randn(2, 5, 64, generator=seeded(7)), torch.randn(2, 5, 64, generator=seeded(8))
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize="int8_weight_only")
    with torch.no_grad():
        ref = c.model(a, x)
        c(a, x)
        prog = c.report.graphs[0].program
        (step,) = [s for s in prog.steps if getattr(s, "kernel", None) is not None and s.kernel.template == "wq_gemm"]
        step.kernel.config = dict(step.kernel.config, BACKEND="aten")
        step.plan = None  # (the launch plan, donor included, is worked out again for the new config)
        assert step.kernel.donation() is not None and prog._donor(step) is not None
        for _ in range(2):  # again: the donated buffer is a fresh one each call
            assert_close(c(a, x), ref)
    assert step.plan[2] is not None  # (the runtime handed the sum h's buffer)


class Glu(nn.Module):
    """SwiGLU with biased gate/up of 96 columns each (not a multiple of a 128-row tile's half), and a second pair
    whose halves are read apart (relu of one, the other doubled)."""

    def __init__(self, d=64, h=96):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, h), nn.Linear(d, h), nn.Linear(h, d, bias=False)
        self.p, self.q = nn.Linear(d, 32, bias=False), nn.Linear(d, 32, bias=False)

    def forward(self, x):
        y = self.down(F.silu(self.gate(x)) * self.up(x))
        return y, torch.relu(self.p(y)) + 1, self.q(y) * 2


@pytest.mark.parametrize("scheme", ["int8_weight_only", "int4_weight_only:32"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sibling_pair_computes_both_halves_in_one_tile(scheme, dtype):
    """merge_sibling_qlinears makes gate/up a `pair` node (one output per sibling): its kernel loads weight rows n
    and N/2 + n side by side (wq_gemm.py PAIR), so SwiGLU's silu(gate) * up is its epilogue. Ragged halves, a
    bias, split-K and other tile widths; a pair whose halves are read apart stores both."""
    torch.manual_seed(21)
    model = Glu().eval().to(dtype)
    x = torch.randn(2, 3, 64, generator=seeded(22)).to(dtype)
    c, got, ref = _compile(model, scheme, x)
    for g, r in zip(got, ref):
        assert_close(g, r, msg=f"{scheme} {dtype}")
    prog = c.report.graphs[0].program
    pairs = [n for n in prog.graph.nodes if n.attrs.get("pair")]
    assert [[o.type.shape for o in n.outputs] for n in pairs] == [[(2, 3, 96)] * 2, [(2, 3, 32)] * 2]
    kinds = [(g.kind, [n.op for n in g.nodes if n.op != "cast"]) for g in prog.groups if g.kind == "qmatmul"]
    op = "wq_linear_" + scheme[:4]
    assert kinds == [("qmatmul", [op, "sigmoid", "mul", "mul"]), ("qmatmul", [op]),
                     ("qmatmul", [op, "relu", "add", "mul"])], kinds
    assert [k.extra["PAIR"] for k in prog.kernels] == [True, False, True]
    assert all(k.info["space"]["BACKEND"] == ["triton"] for k in (prog.kernels[0], prog.kernels[2]))
    for split, bn in ((2, 16), (1, 128), (2, 32)):
        for k in prog.kernels:
            k.config = dict(k.config, SPLIT_K=split, BLOCK_K=32, BLOCK_N=bn)
        with torch.no_grad():
            x2 = torch.randn(2, 3, 64, generator=seeded(23 + split + bn)).to(dtype)
            for g, r in zip(c(x2), c.model(x2)):
                assert_close(g, r, msg=f"{scheme} {dtype} split {split} BLOCK_N {bn}")
    assert not [s.kernel.name for s in prog.steps if getattr(s, "failed", False)]


def test_epilogue_loads_are_issued_before_the_split_k_round_trips():
    """early_loads: index lines and loads at them also run at the GEMM's EARLY LOADS mark (their latency overlaps
    the split-K reduction); the loads leave the body, what computes on them or on acc stays there."""
    from tilecraft.codegen.qmatmul import early_loads

    lines = ["    om = offs_m[:, None]", "    omask = m_ok[:, None] & n_ok[None, :]",
             "    r = tl.load(in0_ptr + om * 64, omask, other=0).to(tl.float32)", "    # ir: add",
             "    add = r + acc", "    s = tl.sum(r, 1)", "    tl.store(out0_ptr + om * 64, add, omask)"]
    early, body = early_loads(lines, {"in0_ptr", "out0_ptr"})
    assert early == lines[:3]
    assert body == lines[:2] + lines[3:]
    torch.manual_seed(31)
    model = GatedBlock().eval()
    x = torch.randn(6, 64, generator=seeded(32))
    c, got, ref = _compile(model, "int4_weight_only:32", x)
    assert_close(got, ref)
    down = c.report.graphs[0].kernels[1]  # x + down(...): the residual x is loaded early
    head, tail = down.source.split("# EARLY LOADS", 1)
    early_part = tail.split("# EPILOGUE (fused by codegen)", 1)[0]
    assert "tl.load(" in early_part and "tl.load(" not in tail.split("# EPILOGUE (fused by codegen)", 1)[1]
