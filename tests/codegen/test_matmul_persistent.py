"""The matmul template's persistent variant (PERSISTENT=1) with TMA descriptor loads (TMA=1) and the split
epilogue (EPILOGUE_SUBTILE=1), on the interpreter (Triton 3.6's interpreter runs device-side tensor descriptors,
and checks their 16-byte alignment rules): results against eager, per-operand and per-launch fallbacks to
pointer loads, the default heuristic and the tuner's space."""
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import tilecraft
from tilecraft.codegen.matmul import default_config, is_hopper
from tilecraft.testing import assert_close, seeded
from tilecraft.tuner.device import PRESETS
from tilecraft.tuner.features import featurize
from tilecraft.tuner.spaces import space_for_kernel

VARIANTS = [{"PERSISTENT": 1, "TMA": 0, "FLATTEN": 1}, {"PERSISTENT": 1, "TMA": 1},
            {"PERSISTENT": 1, "TMA": 1, "EPILOGUE_SUBTILE": 1, "FLATTEN": 1}]
SMALL = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2}  # several tiles per program (3 programs)


def r(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=seeded(seed)).to(dtype)


def compiled_kernel(fn, *inputs):
    """Compile fn, run it once (default config), and return (compiled, its one matmul kernel)."""
    c = tilecraft.compile(fn)
    with torch.no_grad():
        assert_close(c(*inputs), fn(*inputs))
    ks = [k for k in c.report.graphs[0].kernels if k.template == "matmul"]
    assert len(ks) == 1, c.report.summary()
    return c, ks[0]


def check_variants(c, k, fn, *inputs, scale=1.0, tiles=SMALL):
    """Every variant (persistent with pointer loads, with TMA, with the split epilogue) matches eager."""
    assert k.default_config()["PERSISTENT"] == 0  # the interpreter keeps the grouped variant by default
    with torch.no_grad():
        expected = fn(*inputs)
        for v in VARIANTS:
            k.config = {**k.default_config(), **tiles, **v}
            assert_close(c(*inputs), expected, scale=scale, msg=str(v))
    steps = c.report.graphs[0].program.steps
    assert not any(getattr(s, "failed", False) for s in steps), "a kernel failed and fell back to torch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_bias_gelu_odd_sizes_all_variants(dtype):
    w, b = r(45, 40, dtype=dtype, seed=1), r(45, dtype=dtype, seed=2)  # N=45 ragged; K=40: 16-byte rows
    fn = lambda x: F.gelu(F.linear(x, w, b))  # noqa: E731
    x = r(37, 40, dtype=dtype)
    c, k = compiled_kernel(fn, x)
    assert k.info["tma_operands"] == 2  # x and the transposed weight (its [N, K] rows read, then tl.trans)
    assert "tl.make_tensor_descriptor" in k.source and "tl.trans(desc1.load" in k.source
    check_variants(c, k, fn, x)


def test_residual_and_scale_epilogue_with_k_major_weight():
    w, res = r(40, 48, seed=1), r(33, 48, seed=2)  # w is [K, N]: read directly as the [BLOCK_K, BLOCK_N] tile
    fn = lambda x: torch.relu(x @ w * 0.5 + res)  # noqa: E731
    x = r(33, 40)
    c, k = compiled_kernel(fn, x)
    assert k.info["tma_operands"] == 2 and "tl.trans" not in k.source
    check_variants(c, k, fn, x)


class GatedMLP(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.gate, self.up = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)

    def forward(self, x):
        return F.silu(self.gate(x)) * self.up(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dual_gemm_swiglu_all_variants(dtype):
    torch.manual_seed(3)
    m = GatedMLP(24, 40).eval().to(dtype)
    x = r(3, 7, 24, dtype=dtype)  # M = 21
    c, k = compiled_kernel(m, x)
    assert "matmul-dual" in k.info["rules"] and k.info["tma_operands"] == 3  # A once, both weights
    # bf16: eager rounds gate/up to bf16 before the product, the kernel keeps fp32 (as in test_codegen)
    check_variants(c, k, m, x, scale=3.0 if dtype == torch.bfloat16 else 1.0)


def test_bmm_with_transposed_operand_uses_3d_descriptors():
    fn = lambda a, b: torch.bmm(a.transpose(1, 2), b) + 1.0  # noqa: E731
    a, b = r(3, 20, 24), r(3, 20, 36, seed=1)  # a^T: [3, 24, 20], its contiguous dim is M
    c, k = compiled_kernel(fn, a, b)
    assert k.shapes["B"] == 3 and k.info["tma_operands"] == 2 and "tl.reshape(desc0.load([pid_b" in k.source
    check_variants(c, k, fn, a, b, tiles={**SMALL, "BLOCK_N": 16})


def test_bmm_with_a_batch_broadcast_operand_uses_a_2d_descriptor_for_it():
    w = r(24, 36, seed=1)
    fn = lambda a: torch.bmm(a, w.unsqueeze(0).expand(3, 24, 36))  # noqa: E731 - the same B for every batch
    a = r(3, 20, 24)
    c, k = compiled_kernel(fn, a)
    assert k.info["tma_operands"] == 2 and "shape=[24, 36]" in k.source and "desc1.load([k0, pid_n" in k.source
    check_variants(c, k, fn, a, tiles={**SMALL, "BLOCK_N": 16})


def test_operand_with_unaligned_rows_falls_back_to_pointer_loads():
    w = r(30, 37, seed=1)  # fp32 rows of 37 elements: 148 bytes, not a 16-byte multiple: no descriptor
    fn = lambda x: F.linear(x, w).tanh()  # noqa: E731
    x = r(19, 37)
    c, k = compiled_kernel(fn, x)
    assert k.info["tma_operands"] == 0 and "make_tensor_descriptor" not in k.source
    check_variants(c, k, fn, x)


def test_prologue_operand_is_read_with_pointer_loads_and_the_other_with_tma():
    w = r(32, 24, seed=1)
    fn = lambda x: F.linear(torch.tanh(x) * 2, w)  # noqa: E731 - A is computed in the K loop
    x = r(21, 24)
    c, k = compiled_kernel(fn, x)
    assert "matmul-prologue" in k.info["rules"] and k.info["tma_operands"] == 1
    check_variants(c, k, fn, x)


def test_misaligned_buffer_at_launch_runs_the_pointer_loads():
    """A descriptor needs a 16-byte aligned base, known only at launch: such a launch takes TMA=0 (the
    interpreter would reject the descriptor otherwise)."""
    w = r(32, 24, seed=1)
    c, k = compiled_kernel(lambda x: F.linear(x, w) + 1, r(20, 24))
    args = k.make_args(seed=5)
    cfg = {**k.default_config(), **SMALL, "PERSISTENT": 1, "TMA": 1}
    (pos, _) = k.tma_args
    shifted = torch.empty(args[pos].numel() + 1)[1:].view(args[pos].shape).copy_(args[pos])
    assert shifted.data_ptr() % 16
    expected = [a.clone() for a in args]
    k.launch(expected, {**cfg, "TMA": 0})
    got = [a.clone() for a in args]
    got[pos] = shifted
    k.launch(got, cfg)
    for i in k.out_positions:
        assert_close(got[i], expected[i])


def test_a_persistent_config_that_fails_at_runtime_falls_back_to_the_grouped_variant(caplog):
    """Triton refuses a descriptor block under 16 bytes wide (BLOCK_K=2 fp32): a runtime launch warns and
    runs the grouped variant from then on; an explicit config (the tuner's) fails loudly instead."""
    w = r(32, 24, seed=1)
    fn = lambda x: F.linear(x, w) * 2  # noqa: E731
    x = r(20, 24)
    c, k = compiled_kernel(fn, x)
    bad = {**k.default_config(), **SMALL, "BLOCK_K": 2, "PERSISTENT": 1, "TMA": 1}
    with pytest.raises(Exception, match="16 bytes"):
        k.launch(k.make_args(), bad)
    k.config = bad
    with caplog.at_level("WARNING", logger="tilecraft"), torch.no_grad():
        assert_close(c(x), fn(x))
    assert "persistent variant failed" in caplog.text and k.config["PERSISTENT"] == 0
    assert not any(getattr(s, "failed", False) for s in c.report.graphs[0].program.steps)


def test_default_heuristic_keeps_grouped_off_hopper():
    assert not is_hopper("cpu") and not is_hopper("cuda:0")  # the interpreter: never
    for M, N, K in [(4096, 768, 768), (4096, 3072, 768), (2048, 5632, 2048), (8, 4096, 4096)]:
        assert default_config(M, N, K, torch.bfloat16)["PERSISTENT"] == 0
    hop = default_config(4096, 3072, 768, torch.bfloat16, hopper=True)
    assert hop["PERSISTENT"] == 1 and hop["TMA"] == 1 and hop["FLATTEN"] == 1 and hop["BLOCK_M"] == 128
    assert default_config(4096, 5632, 2048, torch.bfloat16, dual=True, hopper=True)["BLOCK_N"] == 128
    assert default_config(8, 4096, 4096, torch.bfloat16, hopper=True)["PERSISTENT"] == 0  # decode: grouped
    assert default_config(4096, 4096, 4096, torch.float32, hopper=True)["PERSISTENT"] == 0
    assert set(hop) == set(default_config(64, 64, 64, torch.float32))  # one key set: DB records fit both


def test_tuner_space_searches_the_variants_and_its_configs_agree():
    w, b = r(48, 32, seed=1), r(48, seed=2)
    fn = lambda x: F.gelu(F.linear(x, w, b))  # noqa: E731
    c, k = compiled_kernel(fn, r(40, 32))
    interp, a100, h100 = PRESETS["cpu-interpreter"], PRESETS["A100"], PRESETS["H100"]
    sp = space_for_kernel(k, interp)
    assert sp.knobs["PERSISTENT"] == [0, 1] and sp.knobs["TMA"] == [0, 1] and "SPLIT_K" not in sp.knobs
    assert space_for_kernel(k, a100).knobs["TMA"] == [0] and space_for_kernel(k, h100).knobs["TMA"] == [0, 1]
    assert space_for_kernel(k, h100).knobs["WARP_SPECIALIZE"] == [0]  # Triton 3.6: Blackwell only
    assert "persistent variant" in sp.why_invalid({**k.default_config(), "TMA": 1})
    configs = sp.enumerate()
    assert all(set(cfg) == set(k.default_config()) for cfg in configs)
    persistent = [cfg for cfg in configs if cfg["PERSISTENT"]]
    assert persistent and {cfg["TMA"] for cfg in persistent} == {0, 1}
    args = k.make_args(seed=1)
    ref = [a.clone() for a in args]
    k.launch(ref, k.default_config())
    for cfg in random.Random(0).sample(persistent, 4):
        out = [a.clone() for a in args]
        k.launch(out, cfg)
        for i in k.out_positions:
            assert_close(out[i], ref[i], msg=str(cfg))
    f0 = featurize("matmul", k.shapes, k.dtype, k.default_config(), h100)
    f1 = featurize("matmul", k.shapes, k.dtype, {**k.default_config(), "PERSISTENT": 1, "TMA": 1}, h100)
    assert (f0["knob_PERSISTENT"], f1["knob_PERSISTENT"], f1["knob_TMA"]) == (0.0, 1.0, 1.0)
    assert f1["blocks_per_sm"] == 1
