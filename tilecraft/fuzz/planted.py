"""Planted bugs: context managers that inject known faults into tilecraft, to show the fuzzer finds them.

Each patches what the compiled path really uses (the registry's op references and Triton expressions, which
the runtime executes; the pass pipeline the compiler builds) and restores it on exit. The fuzzer keeps its own
copy of the op meanings (tilecraft.fuzz.inputs.REFS), so a planted fault changes the compiled result only.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..ir import REGISTRY, Graph, Value


@contextlib.contextmanager
def patched(obj, attr: str, value) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


@contextlib.contextmanager
def wrong_pointwise(op: str = "sub") -> Iterator[None]:
    """A binary pointwise op computes its operands swapped (`b - a` for sub): both its Triton expression and
    the reference meaning the runtime executes."""
    d = REGISTRY[op]
    ref = d.ref

    def swapped(a, b, *args, **kw):
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            return ref(b, a, *args, **kw)
        return ref(a, b, *args, **kw) * -1 if op == "sub" else ref(a, b, *args, **kw) + 1
    expr = d.triton.replace("{0}", "{@}").replace("{1}", "{0}").replace("{@}", "{1}") \
        if isinstance(d.triton, str) else d.triton
    with patched(d, "ref", swapped), patched(d, "triton", expr):
        yield


ACTIVATIONS = ("relu", "gelu", "silu", "sigmoid", "tanh", "leaky_relu")


def drop_activation_pass(graph: Graph) -> Graph:
    """The fault: the last activation (epilogue) is deleted and its uses rewired to its input."""
    for node in reversed(graph.nodes):
        x = node.inputs[0] if node.inputs else None
        if node.op in ACTIVATIONS and isinstance(x, Value) and x.type.dtype == node.out.type.dtype:
            graph.replace_all_uses(node.out, x)
            graph.nodes.remove(node)
            break
    return graph


@contextlib.contextmanager
def dropped_epilogue() -> Iterator[None]:
    """Append a pass to the default pipeline that drops an activation epilogue (rewires it to its input)."""
    from ..compiler import api

    original = api.default_passes

    def passes(options=None):
        return list(original(options)) + [("drop_epilogue", drop_activation_pass)]
    with patched(api, "default_passes", passes):
        yield


def _skip_last(x: torch.Tensor, dims) -> torch.Tensor:
    dims = list(range(x.dim())) if dims is None or dims == [] else ([dims] if isinstance(dims, int) else dims)
    last = max(d % x.dim() for d in dims) if x.dim() else None
    if last is None or x.shape[last] <= 1:
        return x
    return x.narrow(last, 0, x.shape[last] - 1)


@contextlib.contextmanager
def reduction_off_by_one(op: str = "sum") -> Iterator[None]:
    """The runtime's `sum` (or amax / mean) skips the last element of the innermost reduced dim."""
    d = REGISTRY[op]
    ref = d.ref

    def short(x, dim=None, keepdim=False, **kw):
        return ref(_skip_last(x, dim), dim, keepdim, **kw)
    with patched(d, "ref", short):
        yield


FAULTS = {
    "wrong_sub": lambda: wrong_pointwise("sub"),
    "dropped_epilogue": dropped_epilogue,
    "sum_off_by_one": lambda: reduction_off_by_one("sum"),
    "mean_off_by_one": lambda: reduction_off_by_one("mean"),
    "amax_off_by_one": lambda: reduction_off_by_one("amax"),  # often masked: softmax is shift-invariant
}
