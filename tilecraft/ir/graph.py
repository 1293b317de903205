"""The SSA graph: values, nodes and graphs. Nodes refer to registry ops by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Union

from .types import TensorType

Scalar = Union[int, float, bool, None]


@dataclass(eq=False)
class Value:
    """One SSA value: produced by exactly one node (or a graph input)."""

    name: str
    type: TensorType
    producer: "Node | None" = None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Node:
    """One op application. Inputs are Values or Python scalars; attrs are plain data."""

    op: str
    inputs: list[Any]
    attrs: dict[str, Any] = field(default_factory=dict)
    outputs: list[Value] = field(default_factory=list)
    source: str = ""  # where it came from: user source line and the ATen op

    @property
    def out(self) -> Value:
        return self.outputs[0]

    def input_values(self) -> list[Value]:
        return [v for v in self.inputs if isinstance(v, Value)]

    def __repr__(self) -> str:
        return f"Node({self.op}, {[str(o.name) for o in self.outputs]})"


class Graph:
    """A function: inputs, topologically ordered nodes, outputs."""

    def __init__(self):
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._names: set[str] = set()

    def fresh(self, hint: str = "v") -> str:
        hint = "".join(c if c.isalnum() or c == "_" else "_" for c in hint) or "v"
        name, i = hint, 0
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def add_input(self, type: TensorType, name: str = "arg") -> Value:
        v = Value(self.fresh(name), type)
        self.inputs.append(v)
        return v

    def make_node(self, op: str, inputs: list, attrs: dict | None = None, out_types=None,
                  name: str | None = None, source: str = "") -> Node:
        """Create a node (not yet placed); its output types are inferred unless given."""
        from .ops import get_op

        attrs = dict(attrs or {})
        if out_types is None:
            out_types = get_op(op).infer(inputs, attrs)
        node = Node(op, list(inputs), attrs, [], source)
        for t in out_types:
            node.outputs.append(Value(self.fresh(name or op), t, node))
        return node

    def add(self, op: str, inputs: list, attrs: dict | None = None, **kw) -> Node:
        """Append a node at the end and return it."""
        node = self.make_node(op, inputs, attrs, **kw)
        self.nodes.append(node)
        return node

    def users(self) -> dict[Value, list[Node]]:
        users: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.input_values():
                users.setdefault(v, []).append(n)
        return users

    def replace_all_uses(self, old: Value, new) -> None:
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for n in self.nodes:
            yield from n.outputs

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)
