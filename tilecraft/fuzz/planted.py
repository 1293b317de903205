"""Planted bugs: context managers that inject known faults into tilecraft, to show the fuzzer finds them.

The codegen faults patch what generated kernels are built from (a pointwise op's Triton expression, the
reduction template's row mask, the emitter's broadcast index mapping, the matmul template's epilogue) and
restore it on exit. Generated kernels are cached by their source hash (`tilecraft.codegen.kernel._MODULES`),
so a faulty source is a different module and the fault never leaks into later kernels; compiled models are
rebuilt for every check (the oracle calls `tilecraft.compile` afresh), so none outlive the fault either.

The interpreter faults (`*_interpreted`) patch an op's torch reference, which only the reference interpreter
runs: they are checked with the backend "tilecraft-interpreted" (codegen off). The fuzzer keeps its own copy
of the op meanings (tilecraft.fuzz.inputs.REFS), so a planted fault changes the compiled result only.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from typing import Callable, ContextManager, Iterator

import torch

from ..ir import REGISTRY, Value


@contextlib.contextmanager
def patched(obj, attr: str, value) -> Iterator[None]:
    """Set obj.attr to value for the duration; always restored (also on errors)."""
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


# ------------------------------------------------------------------------------------------- codegen faults
@contextlib.contextmanager
def wrong_pointwise(op: str = "sub") -> Iterator[None]:
    """The op's Triton expression computes its operands swapped (`b - a` for sub); its torch reference (what
    the interpreter and torch fallbacks run) stays right."""
    d = REGISTRY[op]
    if not isinstance(d.triton, str):
        raise ValueError(f"op {op} has no plain Triton expression to swap")
    expr = d.triton.replace("{0}", "{@}").replace("{1}", "{0}").replace("{@}", "{1}")
    with patched(d, "triton", expr):
        yield


def _edit_source(k, old: str, new: str):
    """A copy of kernel k whose source has `old` (a regex) replaced by `new`."""
    src, n = re.subn(old, new, k.source)
    if not n:
        raise AssertionError(f"planted fault: pattern {old!r} not in the source of {k.name}")
    return replace(k, source=src, _fn=None)


@contextlib.contextmanager
def reduction_mask_off_by_one() -> Iterator[None]:
    """The reduction template's statistics mask the row with `rindex < RNUMEL - 1`: the last element of every
    row is skipped by sums, maxima, means, variances and softmax (full-size outputs are still all written, so
    the fault is deterministic: no uninitialized memory reaches the outputs)."""
    from ..codegen import reduction

    original = reduction.reduction_kernel

    def faulty(group, outputs, name):
        k, values = original(group, outputs, name)
        k = _edit_source(k, r"( *)rmask = rindex < (\d+)\n", r"\1rmask = rindex < \2\n\1smask = rindex < \2 - 1\n")
        return _edit_source(k, r"tl\.where\(mask, ", "tl.where(mask & smask, "), values

    with patched(reduction, "reduction_kernel", faulty):
        yield


@contextlib.contextmanager
def wrong_broadcast() -> Iterator[None]:
    """Fused pointwise operands broadcast along a dim read the wrong dim: the zero index of the broadcast dim
    lands on its neighbour as well (x[i, 0] read as x[0, 0] for x of shape [n, 1] broadcast to [n, m])."""
    from ..codegen import emit

    cls = emit.Emitter
    original = cls.node_expr

    def node_expr(self, node, v, idx):
        out = node.out.type
        operands = {id(x) for x in node.input_values()}
        before = self.__dict__.get("value")

        def value(x, xi):
            if isinstance(x, Value) and id(x) in operands and x.type.rank:
                lead, xi = out.rank - x.type.rank, list(xi)
                for j, s in enumerate(x.type.shape):
                    if s == 1 and out.shape[j + lead] != 1:
                        k = j - 1 if j > 0 else j + 1
                        if k < x.type.rank and x.type.shape[k] != 1:
                            xi[k] = "0"
                        break
                xi = tuple(xi)
            return cls.value(self, x, xi)

        self.value = value  # an instance attribute shadows the method inside this node's expression only
        try:
            return original(self, node, v, idx)
        finally:
            if before is None:
                del self.value
            else:
                self.value = before

    with patched(cls, "node_expr", node_expr):
        yield


@contextlib.contextmanager
def dropped_epilogue() -> Iterator[None]:
    """The matmul template forgets the last pointwise epilogue op it fused: the kernel stores the value
    before it, and the runtime takes that as the epilogue's result."""
    from ..codegen import matmul
    from ..passes.fusion import Group

    original = matmul.matmul_kernel

    def faulty(group, outputs, name, *options):  # (matmul_kernel also takes the compile options)
        inside = {id(n) for n in group.nodes}
        for n in reversed(group.nodes[1:]):
            x = n.inputs[0] if n.inputs else None
            if (REGISTRY[n.op].category == "pointwise" and isinstance(x, Value) and x.type == n.out.type
                    and x.producer is not None and id(x.producer) in inside
                    and any(o is n.out for o in outputs) and not any(o is x for o in outputs)
                    and not any(n.out is u for m in group.nodes for u in m.input_values())):
                g2 = Group(group.kind, [m for m in group.nodes if m is not n], group.shape, group.dims,
                           list(group.rules))
                k, values = original(g2, [x if o is n.out else o for o in outputs], name, *options)
                return k, [n.out if v is x and a.is_output else v for v, a in zip(values, k.args)]
        return original(group, outputs, name, *options)

    with patched(matmul, "matmul_kernel", faulty):
        yield


# --------------------------------------------------------------------------------------- interpreter faults
def _skip_last(x: torch.Tensor, dims) -> torch.Tensor:
    dims = list(range(x.dim())) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else dims)
    last = max(d % x.dim() for d in dims) if x.dim() else None
    if last is None or x.shape[last] <= 1:
        return x
    return x.narrow(last, 0, x.shape[last] - 1)


@contextlib.contextmanager
def reduction_off_by_one(op: str = "sum") -> Iterator[None]:
    """The reference interpreter's `sum` (or mean / amax) skips the last element of the innermost reduced dim
    (generated kernels do not use op references: check with backend "tilecraft-interpreted")."""
    d = REGISTRY[op]
    ref = d.ref

    def short(x, dim=None, keepdim=False, **kw):
        return ref(_skip_last(x, dim), dim, keepdim, **kw)
    with patched(d, "ref", short):
        yield


# ------------------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Fault:
    """A planted fault: how to plant it, the backend that exercises it, and an op its repro must keep."""

    plant: Callable[[], ContextManager]
    backend: str = "tilecraft"
    keeps: tuple[str, ...] = ()  # the reduced repro contains one of these torch calls


FAULTS: dict[str, Fault] = {
    "wrong_sub": Fault(lambda: wrong_pointwise("sub"), keeps=("torch.sub",)),
    "reduction_mask": Fault(reduction_mask_off_by_one, keeps=(
        "torch.sum", "torch.mean", "torch.amax", "torch.amin", "torch.var", "softmax", "layer_norm",
        "torch.any", "torch.all")),
    "wrong_broadcast": Fault(wrong_broadcast),
    "dropped_epilogue": Fault(dropped_epilogue, keeps=("torch.mm", "torch.addmm", "torch.bmm")),
    "sum_off_by_one_interpreted": Fault(lambda: reduction_off_by_one("sum"), "tilecraft-interpreted",
                                        ("torch.sum",)),
}
