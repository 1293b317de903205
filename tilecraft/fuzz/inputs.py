"""Input search: inputs that keep every intermediate finite and every step function away from its step.

Runs the graph op by op (in its own dtypes and in float64), and resamples with shrinking ranges (and
positive-only inputs) until no intermediate is NaN/Inf and no comparison / floor / sign sits so close to its
threshold that rounding could flip it. The recipe (seed, scale, positive) is the same one the emitted
program's `make_inputs` uses, so a case reproduces from the program alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ir import REGISTRY, Graph, Node, Value
from ..ir.interpreter import call_node
from ..ir.interpreter import evaluate as ir_evaluate
from .emit import build_inputs, input_layout

# The fuzzer's own copy of each op's meaning, taken at import: planted faults patch the registry that the
# compiler runs, and must not change what the fuzzer believes is correct.
REFS = {name: d.ref for name, d in REGISTRY.items()}

COMPARISONS = {"gt", "lt", "ge", "le", "eq", "ne"}
STEPS = {"floor", "ceil", "sign"}


class InputSearchFailed(RuntimeError):
    """No inputs found that keep every intermediate finite; the message says which node went bad."""


@dataclass
class InputSet:
    seed: int
    scale: float
    positive: bool
    tensors: list[torch.Tensor]
    tries: int = 1
    notes: list[str] = field(default_factory=list)


def make_inputs(types, seed: int = 0, scale: float = 1.0, positive: bool = False,
                device: str = "cpu") -> list[torch.Tensor]:
    """Exactly the emitted program's `make_inputs` recipe (the same function), for [(shape, dtype, layout)]."""
    return build_inputs(types, seed, scale, positive, device)


def input_types(graph: Graph) -> list[tuple]:
    """(shape, dtype, layout) of each graph input, as build_inputs takes them."""
    return [(tuple(v.type.shape), v.type.dtype, input_layout(v.type)) for v in graph.inputs]


def _f64(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype.is_floating_point else dtype


def run_node(node: Node, env: dict, f64: bool = False) -> list:
    attrs = node.attrs
    if f64 and node.op == "cast" and attrs["dtype"].is_floating_point:
        attrs = {**attrs, "dtype": torch.float64}
    return call_node(node, env, REFS[node.op], attrs)


def evaluate(graph: Graph, tensors, f64: bool = False) -> dict[int, torch.Tensor]:
    """Every value of the graph (id(Value) -> tensor), computed with the fuzzer's reference ops."""
    if f64:
        tensors = [t.to(_f64(t.dtype)) for t in tensors]
    return ir_evaluate(graph, tensors, lambda node, env: run_node(node, env, f64))


def reference_f64(graph: Graph, tensors) -> list[torch.Tensor]:
    """The graph's outputs computed in float64 from the same (rounded) inputs."""
    env = evaluate(graph, tensors, f64=True)
    return [env[id(v)] for v in graph.outputs]


def _margin(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


def problems(graph: Graph, tensors) -> list[str]:
    """Why these inputs are unfit (empty: fit): non-finite intermediates, or step functions near a step."""
    try:
        env = evaluate(graph, tensors)
        env64 = evaluate(graph, tensors, f64=True)
    except Exception as e:  # noqa: BLE001 - an op that fails on these values is a problem too
        return [f"reference failed: {type(e).__name__}: {e}"]
    out = []
    for node in graph.nodes:
        for o in node.outputs:
            for e, tag in ((env, ""), (env64, " (float64)")):
                t = e[id(o)]
                if t.dtype.is_floating_point and not torch.isfinite(t).all():
                    out.append(f"{node.op} -> %{o.name}{tag} is not finite")
        x0 = node.inputs[0] if node.inputs else None
        if (node.op in COMPARISONS or node.op in STEPS) and not (
                isinstance(x0, Value) and not x0.type.dtype.is_floating_point):  # integer steps are exact
            margin = _margin(node.inputs[0].type.dtype if isinstance(node.inputs[0], Value) else torch.float32)
            a = env64[id(node.inputs[0])]
            if node.op in COMPARISONS:
                b = node.inputs[1]
                b = env64[id(b)] if isinstance(b, Value) else b
                gap = (a - b).abs()
            elif node.op == "sign":
                gap = a.abs()
            else:
                gap = (a - a.round()).abs()
            if gap.numel() and gap.min().item() < margin * max(1.0, a.abs().max().item()):
                out.append(f"{node.op} -> %{node.out.name} has an operand within {margin} of its step")
        if out:
            break
    return out


SCHEDULE = [(1.0, False), (1.0, False), (0.5, False), (1.0, True), (0.5, False), (0.25, False), (0.5, True),
            (0.1, False), (0.25, True), (2.0, False), (0.05, False), (0.1, True)]


def find_inputs(graph: Graph, seed: int = 0, max_tries: int = len(SCHEDULE)) -> InputSet:
    """Search seeds and shrinking ranges for fit inputs; raise InputSearchFailed naming the last problem."""
    types = input_types(graph)
    last: list[str] = []
    for i in range(max_tries):
        scale, positive = SCHEDULE[i % len(SCHEDULE)]
        s = seed * 1000 + i
        tensors = make_inputs(types, s, scale, positive)
        last = problems(graph, tensors)
        if not last:
            return InputSet(s, scale, positive, tensors, i + 1)
    raise InputSearchFailed(f"gave up after {max_tries} tries: {last[0] if last else '?'}")
