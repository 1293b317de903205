"""Every op of the IR registry, compiled through codegen (CPU interpreter) and compared with eager.

Parametrized over `REGISTRY`, so an op is tested the moment it is registered. Each op is applied to random valid
inputs (`tilecraft.ir.samples`), the one-node graph is built into a `KernelProgram` (view ops get a copy after
them, so they become index arithmetic in a kernel) and run; results must match the op's torch reference with the
dtype's tolerance. Ops that run through torch by design are listed below with the reason; the test fails when a
listed op starts to compile (update the list) or an unlisted one runs through torch.
"""
import random

import pytest
import torch

from tilecraft.compiler.api import Options
from tilecraft.compiler.runtime import KernelProgram
from tilecraft.ir import REGISTRY, Graph, TensorType
from tilecraft.ir.samples import sample
from tilecraft.testing import assert_close

# op -> (why it runs through torch, for which inputs: None = always)
RUNS_THROUGH_TORCH = {
    "convolution": ("opaque: ATen / cuDNN convolution; neighbours fuse around it", None),
    "max_pool2d": ("opaque: windowed op, no template", None),
    "avg_pool2d": ("opaque: windowed op, no template", None),
    "adaptive_avg_pool2d": ("opaque: windowed op, no template", None),
    "batch_norm": ("opaque: eval BN folds into the convolution before it (passes); alone it runs in torch", None),
    "sdpa": ("opaque: torch's flash / cuDNN / memory-efficient attention", None),
    "torch_op": ("an ATen op the IR lacks: runs through torch by definition", None),
    "as_strided": ("a raw storage view: torch makes it, kernels read the result", None),
    "channels_last": ("one layout copy chosen by the layout pass, done by torch", None),
    "constant": ("a captured tensor: nothing to compute", None),
    "constant_pad_nd": ("data movement without a template yet (not in fusion.INDEXED)", None),
    "flip": ("data movement without a template yet (not in fusion.INDEXED)", None),
    "tril": ("data movement without a template yet (not in fusion.INDEXED)", None),
    "triu": ("data movement without a template yet (not in fusion.INDEXED)", None),
    "cumsum": ("a scan: the reduction template has no scan", None),
    "var_mean": ("two-output welford not in fusion.REDUCTIONS (var and mean alone compile)", None),
    "any": ("the reduction template reduces bool inputs only", lambda ins: ins[0].dtype != torch.bool),
    "all": ("the reduction template reduces bool inputs only", lambda ins: ins[0].dtype != torch.bool),
    "fp8_linear": ("quantized linear: its own Triton kernel behind a torch custom op (tilecraft.quant)", None),
    "sumsq_tiles": ("written by a quantized GEMM's epilogue (fusion rule qmatmul-sumsq); alone, torch", None),
}
TRIALS = 4


def _graph(name, inputs, attrs):
    g = Graph()
    args = [g.add_input(TensorType.of(x), f"x{i}") if isinstance(x, torch.Tensor) else x
            for i, x in enumerate(inputs)]
    node = g.add(name, args, attrs)
    outs = list(node.outputs)
    if REGISTRY[name].category == "view":  # a lone view is free (no kernel); make one read through it
        outs = [g.add("copy", [o]).out for o in outs]
    g.outputs = outs
    return g


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_op_compiles_and_matches_eager(name):
    r = random.Random(f"every-op {name}")
    for trial in range(TRIALS):
        inputs, attrs = sample(name, r)
        expected = REGISTRY[name].ref(*inputs, **attrs)
        expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
        prog = KernelProgram(_graph(name, inputs, attrs), Options())
        got = prog(*[x.clone() for x in inputs if isinstance(x, torch.Tensor)])
        where = f"{name} trial {trial} ({[tuple(x.shape) if isinstance(x, torch.Tensor) else x for x in inputs]}, " \
                f"{[x.dtype for x in inputs if isinstance(x, torch.Tensor)]}, {attrs})"
        assert not prog.fell_back, f"{where}: kernel fell back to torch: {prog.fell_back}"
        through_torch = name in prog.torch_ops()
        why, when = RUNS_THROUGH_TORCH.get(name, (None, None))
        if why is not None and (when is None or when(inputs)):
            assert through_torch, f"{where}: now compiles; update RUNS_THROUGH_TORCH"
        else:
            assert not through_torch, f"{where}: runs through torch (steps: {prog.torch_ops()})"
        for a, e in zip(got, expected):
            if isinstance(e, torch.Tensor) and e.numel() and e.dtype.is_floating_point:
                e = e.to(a.dtype) if a.dtype != e.dtype else e
            assert_close(a, e, scale=4.0, msg=where)
