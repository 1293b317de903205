"""The verifier: SSA well-formedness and type agreement, with errors that name the node."""
from __future__ import annotations

from .graph import Graph
from .node import Value
from .ops import REGISTRY, OpError
from .printer import format_node


class VerifyError(ValueError):
    """A malformed graph; the message names the offending node."""


class _Where:
    """Names a node in an error message; formatted only when a message is (verify runs after every pass, and
    formatting every node each time cost more than the checks)."""

    def __init__(self, node):
        self.node = node

    def __str__(self):
        return f"node `{format_node(self.node)}`" + (f" (from {self.node.source})" if self.node.source else "")


def verify(graph: Graph) -> Graph:
    defined: set[int] = {id(v) for v in graph.inputs}
    names: set[str] = set()
    for v in graph.inputs:
        if v.name in names:
            raise VerifyError(f"value name %{v.name} defined twice")
        names.add(v.name)
    for node in graph.nodes:
        where = _Where(node)
        opdef = REGISTRY.get(node.op)
        if opdef is None:
            raise VerifyError(f"{where}: unknown op '{node.op}'")
        for v in node.input_values():
            if id(v) not in defined:
                raise VerifyError(f"{where}: uses %{v.name} before it is defined (or it is dangling)")
        count = opdef.outputs_for(node.attrs)
        if count != len(node.outputs) and node.op != "torch_op":
            raise VerifyError(f"{where}: op {node.op} has {count} outputs, node has {len(node.outputs)}")
        for o in node.outputs:
            if o.producer is not node:
                raise VerifyError(f"{where}: output %{o.name} does not point back to its node")
            if o.name in names:
                raise VerifyError(f"{where}: value name %{o.name} defined twice")
            names.add(o.name)
        if node.op != "torch_op":
            try:
                expected = opdef.infer(node.inputs, node.attrs)
            except OpError as e:
                raise VerifyError(f"{where}: {e}") from e
            for o, t in zip(node.outputs, expected):
                if o.type.shape != t.shape or o.type.dtype != t.dtype:
                    raise VerifyError(f"{where}: output %{o.name} has type {o.type}, op gives {t}")
        defined.update(id(o) for o in node.outputs)
    for v in graph.outputs:
        if isinstance(v, Value) and id(v) not in defined:
            raise VerifyError(f"graph output %{v.name} is not defined by any node or input")
    return graph
