"""Config spaces: pruning rules are the documented ones, and sampling/mutation stay inside the valid set."""
import random

import pytest
import torch

from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.spaces import space_for

H100 = PRESETS["H100"]


def test_matmul_space_prunes_shared_memory_registers_and_oversized_tiles():
    sp = space_for("matmul", {"M": 4096, "N": 4096, "K": 4096}, torch.float16, H100)
    big = {"BLOCK_M": 256, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "SPLIT_K": 1, "num_warps": 8,
           "num_stages": 3}
    # Triton keeps num_stages - 1 operand buffers: (256*128 + 128*256) * 2 bytes * (3 - 1) = 262144 > 232448
    assert "shared memory 262144" in sp.why_invalid(big)
    ok = dict(big, BLOCK_N=128, BLOCK_K=64)  # (256*64+64*128)*2*2 = 98304; acc 256*128/256 = 128 regs
    assert sp.valid(ok), sp.why_invalid(ok)
    assert "registers" in sp.why_invalid(dict(ok, num_warps=4))  # 256*128/128 = 256 regs/thread
    small = space_for("matmul", {"M": 16, "N": 4096, "K": 4096}, torch.float16, H100)
    assert small.why_invalid(dict(ok, BLOCK_M=128)) == "tile larger than the problem"
    assert 8 in sp.knobs["SPLIT_K"] or sp.knobs["SPLIT_K"] == [1]
    assert sp.knobs["SPLIT_K"] == [1]  # square 4096^3 fills the device
    assert space_for("matmul", {"M": 512, "N": 512, "K": 8192}, torch.float16, H100).knobs["SPLIT_K"] == [1, 2, 4, 8]


def test_rules_keep_configs_that_run_on_hopper():
    """Issue 18: the M=16 rule removed every BLOCK_M >= 32 config (a 64-row wgmma tile is often the best one), and
    counting num_stages operand buffers removed 128x128x128 fp16 with 4 stages, which runs (192 KB of 227 KB)."""
    small = space_for("matmul", {"M": 16, "N": 4096, "K": 4096}, torch.float16, H100)
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1, "SPLIT_K": 1, "num_warps": 4,
           "num_stages": 4}
    assert small.valid(cfg) and small.valid(dict(cfg, BLOCK_M=32)), small.why_invalid(cfg)
    assert {c["BLOCK_M"] for c in small.enumerate()} == {16, 32, 64}
    sq = space_for("matmul", {"M": 4096, "N": 4096, "K": 4096}, torch.float16, H100)
    tile = dict(cfg, BLOCK_M=128, BLOCK_N=128, GROUP_M=8, num_warps=8)
    from tilecraft.tuner.spaces import gemm_smem_bytes

    assert gemm_smem_bytes(tile, 2) == (128 * 128 + 128 * 128) * 2 * 3 == 196608
    assert sq.valid(tile), sq.why_invalid(tile)
    assert "shared memory" in sq.why_invalid(dict(tile, num_stages=5))  # 4 buffers: 262144 B


def test_enumerate_sample_neighbors_mutate_are_valid_and_consistent():
    rng = random.Random(3)
    for tpl, shapes in [("matmul", {"M": 96, "N": 200, "K": 3000}), ("reduction", {"rows": 300, "cols": 1000}),
                        ("pointwise", {"numel": 5000}), ("wq_gemv", {"M": 1, "N": 4096, "K": 4096}),
                        ("wq_gemm", {"M": 16, "N": 4096, "K": 4096})]:
        sp = space_for(tpl, shapes, torch.bfloat16, H100)
        allc = sp.enumerate()
        brute = [c for c in sp.iter_raw() if sp.rule(c) is None]
        assert allc == brute and len(allc) > 5, tpl
        keys = {str(sorted(c.items())) for c in allc}
        for _ in range(30):
            c = sp.sample(rng)
            assert str(sorted(c.items())) in keys
            m = sp.mutate(c, rng)
            assert sp.valid(m) and m != c
            x = sp.crossover(c, sp.sample(rng), rng)
            assert sp.valid(x)
            for n in sp.neighbors(c):
                assert sp.valid(n) and sum(n[k] != c[k] for k in c) == 1



def test_a_sparse_subset_space_samples_and_enumerates_its_configs_without_walking_the_product():
    """bench/eval_cost_model.py replays searches on ~60 recorded configs of a ~10^5 knob product: sampling must
    draw from those (rejection sampling nearly never hits one) and enumeration must list exactly them."""
    import time

    from tilecraft.tuner.spaces import ConfigSpace, config_key, subset_space

    base = space_for("matmul", {"M": 4096, "N": 4096, "K": 4096}, torch.float16, H100)
    flags = {k: [0, 1] for k in ("PERSISTENT", "TMA", "EPILOGUE_SUBTILE", "FLATTEN")}  # as a recorded sweep has
    sp = ConfigSpace("matmul", {**base.knobs, **flags}, base.rule)
    assert sp.raw_size() > 50_000
    rng = random.Random(0)
    picked = [sp.sample(rng) for _ in range(40)]
    picked.append({**picked[0], "BLOCK_K": 4096})  # not valid in the space: left out
    sub = subset_space(sp, picked)
    keys = {config_key(c) for c in picked[:40]}
    t0 = time.perf_counter()
    draws = [sub.sample(rng) for _ in range(200)]
    assert time.perf_counter() - t0 < 2.0
    assert {config_key(c) for c in draws} <= keys and len({config_key(c) for c in draws}) > 20
    assert [config_key(c) for c in sub.enumerate()] == list(dict.fromkeys(config_key(c) for c in picked[:40]))
    assert all(sub.valid(sub.mutate(c, rng)) for c in draws[:10])

def test_reduction_single_pass_and_pointwise_limits():
    sp = space_for("reduction", {"rows": 64, "cols": 1000}, torch.float32, H100)
    assert max(sp.knobs["RBLOCK"]) == 8192
    assert max(c["RBLOCK"] for c in sp.enumerate()) == 1024  # one pow2 covering the row: single pass
    assert sp.why_invalid({"XBLOCK": 64, "RBLOCK": 1024, "num_warps": 4}).startswith("XBLOCK*RBLOCK > 8192")
    assert sp.why_invalid({"XBLOCK": 8, "RBLOCK": 1024, "num_warps": 2}).startswith("more than 64 elements")
    assert sp.valid({"XBLOCK": 8, "RBLOCK": 1024, "num_warps": 4})
    pw = space_for("pointwise", {"numel": 100}, torch.float32, H100)
    assert {c["XBLOCK"] for c in pw.enumerate()} == {64, 128}


def test_fit_to_kernel_drops_knobs_the_kernel_lacks_and_fixes_the_ones_the_space_lacks():
    from tilecraft.tuner.spaces import fit_to_kernel

    full = space_for("matmul", {"M": 4096, "N": 64, "K": 8192}, torch.float16, H100)
    assert len(full.knobs["SPLIT_K"]) > 1  # split-K is useful here for a kernel that has it...
    default = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 3,
               "EVEN_K": True}
    sp = fit_to_kernel(full, default)  # ...but codegen's fused-epilogue matmul has no SPLIT_K knob
    assert "SPLIT_K" not in sp.knobs and sp.fixed == {"EVEN_K": True}
    configs = sp.enumerate()
    assert configs and all(set(c) == set(default) for c in configs)
    import random

    rng = random.Random(0)
    c = sp.sample(rng)
    assert set(c) == set(default) and set(sp.mutate(c, rng)) == set(default)


def test_dual_gemm_kernel_space_and_features_count_both_gemms():
    """A dual GEMM (SwiGLU's gate and up in one kernel) holds two accumulators and two B tiles: its space
    prunes on twice the registers and B-tile shared memory, and its features count twice the FLOPs."""
    import torch.nn as nn
    import torch.nn.functional as F

    import tilecraft
    from tilecraft.tuner.device import PRESETS
    from tilecraft.tuner.features import featurize
    from tilecraft.tuner.spaces import gemm_acc_regs_per_thread, matmul_space, space_for_kernel

    class SwiGLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.g, self.u, self.d = nn.Linear(16, 24, bias=False), nn.Linear(16, 24, bias=False), nn.Linear(24, 16)

        def forward(self, x):
            return self.d(F.silu(self.g(x)) * self.u(x))

    c = tilecraft.compile(SwiGLU().eval())
    with torch.no_grad():
        c(torch.randn(8, 16))
    dual = [k for k in c.report.graphs[0].kernels if "matmul-dual" in k.info["rules"]]
    assert len(dual) == 1 and dual[0].shapes["G"] == 2
    h100 = PRESETS["H100"]
    big = {"B": 1, "M": 4096, "N": 5632, "K": 2048}
    single, double = matmul_space(big, torch.bfloat16, h100), matmul_space({**big, "G": 2}, torch.bfloat16, h100)
    assert 0 < len(double.enumerate()) < len(single.enumerate())
    assert all(gemm_acc_regs_per_thread(cfg, 2) <= 128 for cfg in double.enumerate())
    assert space_for_kernel(dual[0], h100).enumerate()
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3}
    f1 = featurize("matmul", big, torch.bfloat16, cfg, h100)
    f2 = featurize("matmul", {**big, "G": 2}, torch.bfloat16, cfg, h100)
    assert f2["floor_compute_us_log"] == pytest.approx(f1["floor_compute_us_log"] + 1)
    assert f2["smem_kb"] > f1["smem_kb"] and f2["regs_per_thread"] == 2 * f1["regs_per_thread"]


def test_no_rule_removes_a_config_measured_on_the_h100():
    """Every config timed on the H100 in bench run 3 (the winners of the reference and codegen GEMMs and the
    codegen defaults, bf16 and fp16 at 4096^3 and 8192^3) ran there, so today's rules must keep all of them."""
    from pathlib import Path

    from tilecraft.tuner.cost_model import load_records

    recs = load_records(Path(__file__).resolve().parents[2] / "bench/results/h100-2026-11-23/run3/tune_gemm.json")
    assert len(recs) == 12
    for r in recs:
        sp = space_for("matmul", r.shapes, r.dtype, r.device_info())
        assert r.status == "ok" and sp.rule(r.config) is None, (r.shapes, r.config, sp.rule(r.config))


def test_a_template_declares_its_space_and_feature_traits_from_its_own_module():
    """spaces.py and features.py name no quantized template: the quant module registers wq_gemv/wq_gemm/fp8_gemm
    (1-byte weights, gemm features); any new template does the same, or its kernels carry config_space()."""
    from tilecraft.tuner import spaces
    from tilecraft.tuner.features import featurize
    from tilecraft.tuner.spaces import ConfigSpace, register_template, space_for_kernel, template_info

    assert template_info("wq_gemm").weight_itemsize == 1 and template_info("fp8_gemm").family == "gemm"
    assert template_info("qmatmul").weight_itemsize == 1
    shapes = {"M": 64, "N": 256, "K": 512}
    cfg = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "num_warps": 4, "num_stages": 3}
    f8 = featurize("wq_gemm", shapes, torch.bfloat16, cfg, H100)
    f16 = featurize("matmul", shapes, torch.bfloat16, cfg, H100)
    assert f8["family_gemm"] == f16["family_gemm"] == 1.0 and f8["weight_itemsize"] == 1 and f16["weight_itemsize"] == 2
    assert f8["smem_kb"] == (64 * 64 * 2 + 64 * 64 * 1) * 2 / 1024  # 2 buffers of a bf16 A tile and an int8 W tile

    def my_space(shapes, dtype, device):
        return ConfigSpace("my_gemm", {"BLOCK_N": [32, 64], "num_warps": [4]})

    try:
        register_template("my_gemm", my_space, "gemm", 1)
        assert space_for("my_gemm", shapes, torch.float16, H100).enumerate() == [
            {"BLOCK_N": 32, "num_warps": 4}, {"BLOCK_N": 64, "num_warps": 4}]
        f = featurize("my_gemm", shapes, torch.float16, {"BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4}, H100)
        assert f["family_gemm"] == 1.0 and f["weight_itemsize"] == 1
    finally:
        spaces.TEMPLATES.pop("my_gemm", None)
    with pytest.raises(KeyError, match="no config space for template 'my_gemm'.*register_template"):
        space_for("my_gemm", shapes, torch.float16, H100)
    # an undeclared template's family comes from its shape names
    assert template_info("somebody_elses", {"rows": 4, "cols": 8}).family == "reduction"

    class OwnSpace:  # a kernel that carries its own space wins over the template table
        template, dtype = "matmul", torch.float16

        def config_space(self, device):
            return ConfigSpace("matmul", {"BLOCK_M": [16], "BLOCK_N": [16], "BLOCK_K": [16]})

    assert space_for_kernel(OwnSpace(), H100).size() == 1


def test_a_codegen_matmul_with_an_aten_plan_searches_both_backends():
    """codegen's matmul runs cuBLAS (BACKEND=aten, the default on a GPU) or its generated GEMM; the tuner used to
    fix BACKEND at the default, so on a GPU every tuned config timed cuBLAS. ATen is one config (its tiles mean
    nothing), the generated kernel all of them; both give a @ b."""
    import tilecraft
    from tilecraft.tuner.measure import compare_outputs
    from tilecraft.tuner.spaces import space_for_kernel

    torch._dynamo.reset()
    a, b = torch.randn(32, 48), torch.randn(48, 64)
    c = tilecraft.compile(lambda x, y: x @ y, matmul="aten")
    with torch.no_grad():
        c(a, b)
    (k,) = [k for g in c.report.graphs for k in g.kernels]
    default = k.default_config()
    assert default["BACKEND"] == "aten" and k.aten is not None
    sp = space_for_kernel(k, H100)
    configs = sp.enumerate()
    aten = [cfg for cfg in configs if cfg["BACKEND"] == "aten"]
    assert aten == [default] and len(configs) > 100
    assert "BACKEND=aten runs cuBLAS" in sp.why_invalid(dict(default, BLOCK_K=16))
    args = k.make_args("cpu", 0)
    outs = []
    for cfg in (default, next(cfg for cfg in configs if cfg["BACKEND"] == "triton")):
        k.launch(args, cfg)
        outs.append(args[k.out_positions[0]].clone())
    ins = [x for i, x in enumerate(args) if i not in k.out_positions]
    assert compare_outputs(outs, [ins[0] @ ins[1]] * 2) is None
