"""Dynamic shapes: one Dynamo compile with symbolic sizes, one tilecraft program per concrete shape.

`torch.compile(..., dynamic=True)`, `torch._dynamo.mark_dynamic` or Dynamo's automatic dynamic shapes hand the
backend an ATen graph whose sizes are symbols (SymInt inputs, tensors of shape [s0, 16, ...]). The IR and the
kernel templates work on concrete sizes, so instead of sending such a graph to torch, the backend specializes
at call time: the symbolic graph is re-traced with the call's concrete inputs (make_fx on fake tensors, which
also records every node's type), compiled with the usual pipeline, and cached by the inputs' shapes and strides.
Dynamo compiles once (no recompile per batch size); each new shape costs one tilecraft compile, and schedule
lookup falls back to a shape bucket (each size rounded up to a power of two, see `tuner.select`) when the
database has no record for the exact shape.
"""
from __future__ import annotations

import logging

import torch
from torch.fx.experimental.proxy_tensor import make_fx

log = logging.getLogger("tilecraft")


def is_symbolic(gm: torch.fx.GraphModule) -> bool:
    """Does the graph take symbolic sizes (a SymInt input, or a tensor input whose shape has a symbol)?"""
    for n in gm.graph.nodes:
        if n.op != "placeholder":
            continue
        v = n.meta.get("val")
        if isinstance(v, torch.SymInt) or (
                isinstance(v, torch.Tensor) and not all(isinstance(s, int) for s in v.shape)):
            return True
    return False


def specialize(gm: torch.fx.GraphModule, args: list) -> tuple[torch.fx.GraphModule, list[int]]:
    """The graph traced for these concrete inputs, with only tensor inputs left; and which arguments those are.
    The sizes (SymInt arguments) become constants of the new graph."""
    with torch.no_grad():
        traced = make_fx(gm, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
    keep = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    for i, n in enumerate([n for n in traced.graph.nodes if n.op == "placeholder"]):
        if i not in keep:
            if n.users:
                raise RuntimeError(f"specialized graph still reads size input {n.name}")
            traced.graph.erase_node(n)
    traced.recompile()
    return traced, keep


def symbolic_inputs(gm: torch.fx.GraphModule) -> list[int]:
    """Indices of the inputs whose value or shape is symbolic: the only ones a call's shape key must read
    (parameters keep static shapes, and there may be hundreds of them)."""
    out = []
    for i, n in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        v = n.meta.get("val")
        if not isinstance(v, torch.Tensor) or not all(isinstance(s, int) for s in v.shape):
            out.append(i)
    return out


class ShapeSpecialized:
    """The callable the backend returns for a symbolic graph: compiles (and caches) one program per input shape."""

    def __init__(self, gm: torch.fx.GraphModule, compile_fn, static_inputs: tuple[int, ...] = ()):
        self.gm, self.compile_fn, self.static_inputs = gm, compile_fn, static_inputs
        self.programs: dict[tuple, tuple] = {}
        self.symbolic = symbolic_inputs(gm)

    def __call__(self, *args):
        key = tuple((tuple(a.shape), a.stride()) if isinstance(a, torch.Tensor) else a
                    for a in (args[i] for i in self.symbolic))
        entry = self.programs.get(key)
        if entry is None:
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            try:
                traced, keep = specialize(self.gm, list(args))
            except Exception as e:  # noqa: BLE001 - a graph make_fx cannot re-trace still runs, through torch
                log.warning("tilecraft: cannot specialize the dynamic-shape graph for shapes %s (%s: %s); "
                            "it runs through torch", shapes, type(e).__name__, e)
                self.programs[key] = (self.gm.forward, list(range(len(args))))
                return self.gm.forward(*args)
            log.info("tilecraft: specializing a dynamic-shape graph for input shapes %s", shapes)
            prog = self.compile_fn(traced)
            if hasattr(prog, "static_inputs"):  # argument indices of parameters, among the tensor arguments
                prog.static_inputs = tuple(keep.index(i) for i in self.static_inputs if i in keep)
            entry = self.programs[key] = (prog, keep)
        prog, keep = entry
        return prog(*[args[i] for i in keep])
