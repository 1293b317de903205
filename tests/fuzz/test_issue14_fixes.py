"""Regression tests of issue 14's op-by-op findings, on the CPU (and on CUDA as well when it is there).

- clamp(x, min_tensor, max_tensor) ran through torch: now maximum/minimum kernels (capture rewrite).
- x.to(dtype, non_blocking=True) raised ExecutionError in the cast node whenever the cast ran through torch
  (pairs with float64, or codegen off): non_blocking reached the node's attributes. Every pair of dtypes,
  with kernels and with the interpreter.
- _softmax_backward_data with half grads (and the half_to_float backward) against a float64 hand computation.
- embedding_bag (every mode, offsets, per-sample weights, padding_idx) against eager.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import tilecraft
from tilecraft.fuzz.oracle import tilecraft_warnings
from tilecraft.testing import assert_close

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CAST_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int16,
               torch.int32, torch.int64, torch.bool]


def _compile(fn, *args, **options):
    torch._dynamo.reset()
    compiled = tilecraft.compile(fn, **options)
    with torch.no_grad():
        out = compiled(*args)
    return out, compiled.report


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lo,hi,dtype", [((4,), (3, 1), torch.float32), ((1, 4), None, torch.float16),
                                         (None, (4,), torch.bfloat16), ((), (3, 4), torch.float32)])
def test_clamp_with_tensor_bounds_compiles(device, lo, hi, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g).to(dtype).to(device)
    lo_t = None if lo is None else (torch.randn(lo, generator=g) - 0.5).to(dtype).to(device)
    hi_t = None if hi is None else (torch.randn(hi, generator=g) + 0.5).to(dtype).to(device)

    def f(x, lo, hi):
        return torch.clamp(x, lo, hi) * 2

    got, report = _compile(f, x, lo_t, hi_t)
    assert torch.equal(got, f(x, lo_t, hi_t))  # max/min and a doubling are exact in every dtype
    assert not report.fell_back() and report.graphs[0].kernels
    assert "torch_op" not in report.graphs[0].ops, report.summary()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("codegen", [True, False])
def test_cast_every_dtype_pair(device, codegen):
    failures = []
    for src in CAST_DTYPES:  # one program per source dtype: its casts to every other dtype
        dsts = [d for d in CAST_DTYPES if d != src]
        g = torch.Generator().manual_seed(1)
        x = (torch.rand(3, 5, generator=g) * 9 - (0 if src == torch.uint8 else 4.5)).to(src).to(device)
        if src.is_floating_point:  # negative floats to uint8 are undefined behaviour: keep those >= 0
            dsts = [d for d in dsts if d != torch.uint8]

        def f(x):
            return tuple(x.to(d, non_blocking=True) for d in dsts) + tuple(x.to(d).to(torch.float32) + 1
                                                                          for d in dsts)

        try:
            got, report = _compile(f, x, codegen=codegen)
        except Exception as e:  # noqa: BLE001 - collect every failing source dtype
            failures.append(f"{src} -> {dsts}: {type(e).__name__}: {e}")
            continue
        failures += [f"{src} -> {d}: got {a} want {b}" for d, a, b in zip(dsts + dsts, got, f(x))
                     if not torch.equal(a, b)]
        if report.fell_back():
            failures.append(f"{src}: fell back {report.fell_back()}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grad_dt,out_dt,input_dt", [
    (torch.float16, torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16, torch.bfloat16),
    (torch.float32, torch.float32, torch.float16),  # the half_to_float softmax's backward: half result
])
def test_softmax_backward_data_half(device, grad_dt, out_dt, input_dt):
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(4, 33, generator=g).to(grad_dt).to(device)
    out = torch.softmax(torch.randn(4, 33, generator=g), -1).to(out_dt).to(device)

    def f(grad, out):
        return torch.ops.aten._softmax_backward_data(grad, out, -1, input_dt)

    got, report = _compile(f, grad, out)
    g64, o64 = grad.double(), out.double()
    want = (g64 * o64 - o64 * (g64 * o64).sum(-1, keepdim=True)).to(input_dt)  # by hand, in float64
    assert got.dtype == input_dt
    assert_close(got.cpu(), want.cpu(), scale=2.0)
    assert not report.fell_back() and report.graphs[0].kernels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,kw", [("sum", {}), ("mean", {}), ("max", {}), ("sum", {"psw": True}),
                                     ("mean", {"padding_idx": 2}), ("sum", {"include_last_offset": True})])
def test_embedding_bag_matches_eager(device, mode, kw):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(10, 6, generator=g).to(device)
    idx = torch.randint(0, 10, (9,), generator=g).to(device)
    off = torch.tensor([0, 3, 3, 7]).to(device)  # an empty bag too
    psw = torch.rand(9, generator=g).to(device) if kw.get("psw") else None
    extra = {k: v for k, v in kw.items() if k != "psw"}

    def f(w, idx, off, psw):
        return F.embedding_bag(idx, w, off, mode=mode, per_sample_weights=psw, **extra)

    with tilecraft_warnings():  # "runs through torch (no IR op for it)", collected, not printed
        got, _ = _compile(f, w, idx, off, psw)
        assert_close(got, f(w, idx, off, psw))
        module = torch.nn.EmbeddingBag(10, 6, mode=mode, **extra).to(device)  # weight requires grad
        got, report = _compile(module, idx, off, psw)
        with torch.no_grad():
            assert_close(got, module(idx, off, psw), msg=report.summary())
