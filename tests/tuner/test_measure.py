"""The measurer on CPU: real interpreter runs of the reference GEMM, failures recorded, crashes isolated."""
import torch

from tilecraft.testing import assert_close
from tilecraft.tuner.measure import SimulatedMeasurer, SubprocessMeasurer, compare_outputs
from tilecraft.tuner.reference_kernels import ReferenceGemm
from tilecraft.tuner.search import search
from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.spaces import space_for

CFGS = [
    {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 1, "SPLIT_K": 1, "num_warps": 2, "num_stages": 2},
    {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 4, "SPLIT_K": 2, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 8, "SPLIT_K": 4, "num_warps": 4, "num_stages": 4},
]


def test_reference_gemm_matches_torch_in_the_interpreter():
    for dtype, (M, N, K) in [(torch.float16, (40, 24, 72)), (torch.float32, (33, 50, 64)),
                             (torch.bfloat16, (24, 40, 48))]:
        k = ReferenceGemm(M, N, K, dtype)
        for seed, cfg in enumerate(CFGS):
            args = k.make_args("cpu", seed)
            k.launch(args, cfg)
            expected = (args[0].double() @ args[1].double()).to(dtype)
            assert_close(args[2], expected, scale=1 if dtype != torch.float32 else 10, msg=f"{dtype} {cfg}")


class BrokenGemm(ReferenceGemm):
    """Fails (like a compile error) for BLOCK_K=32 and computes a wrong answer for BLOCK_N=16."""

    def launch(self, args, config=None):
        if config and config["BLOCK_K"] == 32:
            raise RuntimeError("triton.CompilationError: simulated compile error")
        super().launch(args, config)
        if config and config["BLOCK_N"] == 16:
            args[2].add_(1.0)


def test_failing_and_wrong_configs_are_recorded_as_failed_and_the_run_carries_on():
    k = BrokenGemm(32, 32, 64, torch.float16)
    m = SimulatedMeasurer(run_kernels=True)
    res = [m.measure(k, c) for c in CFGS]
    assert [r.status for r in res] == ["ok", "failed", "ok"]
    assert "simulated compile error" in res[1].error
    bad = m.measure(k, dict(CFGS[0], BLOCK_N=16))
    assert bad.status == "failed" and bad.error.startswith("wrong result vs default config")
    space = space_for("matmul", k.shapes, k.dtype, PRESETS["cpu-interpreter"])
    r = search(k, space, m, "random", budget=12, seed=1)
    assert r.measurements == 12
    for meas in r.history:
        assert meas.ok == (meas.config["BLOCK_K"] != 32 and meas.config["BLOCK_N"] != 16), meas


def test_compare_outputs_tolerances():
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    assert compare_outputs([x + 1e-5], [x]) is None
    assert "max abs error" in compare_outputs([x + 1e-2], [x])
    h = x.half()
    assert compare_outputs([h + 0.01], [h]) is None
    assert compare_outputs([torch.tensor([1, 2])], [torch.tensor([1, 3])]).startswith("output 0: integer")


class CrashingGemm(ReferenceGemm):
    """Kills its process for SPLIT_K=2 (as a segfault or lost CUDA context would)."""

    def launch(self, args, config=None):
        if config and config["SPLIT_K"] == 2:
            import os

            os._exit(11)
        super().launch(args, config)


def test_subprocess_measurer_survives_a_crashing_candidate():
    k = CrashingGemm(16, 32, 32, torch.float32)
    m = SubprocessMeasurer(SimulatedMeasurer, timeout_s=120, run_kernels=True)
    try:
        res = [m.measure(k, c) for c in CFGS]
    finally:
        m.close()
    assert [r.status for r in res] == ["ok", "failed", "ok"], res
    assert "worker process died" in res[1].error
    assert res[2].time_ms > 0
