"""Repros the fuzzer reduced from wrong results in tilecraft's generated kernels (each fixed; kept here).

Inputs are drawn as the fuzzer drew them (normal in float64 from the case's seed, then cast), so each test
replays the exact failing values.
"""
import pytest
import torch

import tilecraft
from tilecraft.testing import assert_close


def bf16_cast_rounds(x0):
    """A cast out of a fused bf16 value must round to bf16 first, as eager does (seed 33000207)."""
    return (torch.sin(x0.to(torch.bfloat16)).to(torch.float32),)


def expm1_precision(x0, x1):
    """expm1 near 0 lost relative accuracy (exp(x) - 1), magnified by the division (seed 58000043)."""
    return (torch.div(x1, torch.expm1(x0)),)


def view_output_of_merged_producer(x0, x1, x2, x3):
    """A producer whose view is a graph output was merged into a smaller iteration space (seed 21000189)."""
    v1 = torch.maximum(x2, x0)
    return (torch.abs(v1[:, :, :1]), x1, x3, v1.reshape([560]))


def constant_index_into_cat(x0, x1):
    """A slice of a cat at a constant row makes a scalar load offset under a block mask; the kernel failed to
    launch and its ops fell back to torch (seed 1123000775, found by the fuzzer's fallback count)."""
    v3 = torch.cat([torch.sum(x0, dim=[0, 3]), x1], dim=0)
    return (torch.minimum(v3[3:4:2], x1),)


def batch_broadcast_into_bmm_epilogue(x0, x1, x2):
    """A [B, 1, 1] operand of a bmm's epilogue is read at pid_b alone: a scalar offset under the block mask
    (seed 777000050; the kernel fell back to torch)."""
    return (torch.minimum(torch.bmm(x0, x1), x2),)


def half_value_promoted_by_where(x0, x1, x2):
    """A fused fp16 value (x1.to(fp16) + 0.01) that `where` promotes to float32 (its other branch is bf16) must be
    rounded to fp16 first, as eager stores it; the kernel kept its fp32 precision (seed 91000056, found once
    the generator mixed dtypes and integer / boolean conditions)."""
    return (torch.where(x0 > 0, x1.to(torch.float16) + 0.01, x2),)


CASES = [
    (bf16_cast_rounds, [((1,), torch.float32)], 33000207000),
    (expm1_precision, [((2, 3, 7, 2), torch.float32)] * 2, 58000043000),
    (view_output_of_merged_producer, [((), torch.bfloat16), ((), torch.float32), ((7, 8, 5, 2), torch.bfloat16),
                                      ((), torch.bfloat16)], 21000189000),
    (constant_index_into_cat, [((2, 6, 1, 7), torch.float16), ((1, 1), torch.float16)], 1123000775000),
    (batch_broadcast_into_bmm_epilogue, [((4, 4, 5), torch.float16), ((4, 5, 6), torch.float16),
                                         ((4, 1, 1), torch.float16)], 777000050000),
    (half_value_promoted_by_where, [((4, 5), torch.float32), ((4, 5), torch.float32), ((4, 5), torch.bfloat16)],
     91000056000),
]


@pytest.mark.parametrize("fn,types,seed", CASES, ids=[c[0].__name__ for c in CASES])
def test_fuzz_repro(fn, types, seed):
    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype) for shape, dtype in types]
    compiled = tilecraft.compile(fn)
    with torch.no_grad():
        assert_close(compiled(*[x.clone() for x in inputs]), fn(*[x.clone() for x in inputs]))
    assert compiled.report.graphs[0].kernels, "the repro must run through generated kernels"
    failed = [s.kernel.name for s in compiled.report.graphs[0].program.steps if getattr(s, "failed", False)]
    assert not failed, f"kernels fell back to torch: {failed}"
