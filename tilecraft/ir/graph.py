"""The SSA graph (inputs, ordered nodes, outputs) and the helpers every layer uses to walk and rebuild one."""
from __future__ import annotations

from typing import Iterator

from .node import Node, Scalar, Value
from .ops import REGISTRY, OpError, get_op
from .printer import format_graph
from .types import TensorType

__all__ = ["Graph", "Node", "Value", "Scalar", "is_view", "base_value", "copy_graph"]


class Graph:
    """A function: inputs, topologically ordered nodes, outputs."""

    def __init__(self):
        self.inputs: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self._names: set[str] = set()
        self._suffix: dict[str, int] = {}  # hint -> the last suffix fresh() gave it (names are never freed)

    def fresh(self, hint: str = "v") -> str:
        """An unused value name: hint, else hint_1, hint_2, ... (the first free one; the search resumes where the
        last one for this hint ended, so naming n values alike costs O(n), not O(n^2))."""
        hint = "".join(c if c.isalnum() or c == "_" else "_" for c in hint) or "v"
        i = self._suffix.get(hint, 0)
        name = f"{hint}_{i}" if i else hint
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._suffix[hint] = i
        self._names.add(name)
        return name

    def add_input(self, type: TensorType, name: str = "arg") -> Value:
        v = Value(self.fresh(name), type)
        self.inputs.append(v)
        return v

    def make_node(self, op: str, inputs: list, attrs: dict | None = None, out_types=None,
                  name: str | None = None, source: str = "") -> Node:
        """Create a node (not yet placed); its output types are inferred unless given."""
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
        return format_graph(self)


# ----------------------------------------------------------------------------------------------- helpers
def is_view(node: Node | None) -> bool:
    """Is node a view that kernels read through as index arithmetic (every view but as_strided, which runs as
    a torch view)?"""
    return node is not None and REGISTRY[node.op].template == "view"


def base_value(v: Value) -> Value:
    """Follow view ops back to the value they index into."""
    while is_view(v.producer):
        v = v.producer.inputs[0]
    return v


def copy_graph(graph: Graph, outputs: list[Value] | None = None, fresh: set[int] | None = None,
               bypass: dict[int, Value] | None = None, retype=None, reattr=None) -> Graph | None:
    """A rebuilt copy of `graph` keeping only what `outputs` need. Values in `fresh` (ids) become new graph
    inputs; values in `bypass` are replaced by the given (same-typed) value; `retype(TensorType)` maps input
    types and `reattr(node, attrs)` node attributes. None if the result is not a valid graph."""
    outputs = list(graph.outputs if outputs is None else outputs)
    fresh, bypass = fresh or set(), bypass or {}

    def resolve(v: Value) -> Value:
        seen = 0
        while id(v) in bypass and seen < 1000:
            v, seen = bypass[id(v)], seen + 1
        return v

    # liveness, walking back from the outputs
    live: set[int] = set()
    stack = [resolve(v) for v in outputs if isinstance(v, Value)]
    producers = {id(o): n for n in graph.nodes for o in n.outputs}
    while stack:
        v = stack.pop()
        if id(v) in live:
            continue
        live.add(id(v))
        n = producers.get(id(v))
        if n is not None and id(v) not in fresh:
            stack.extend(resolve(u) for u in n.input_values())
    g = Graph()
    env: dict[int, Value] = {}
    retype = retype or (lambda t: t)
    k = 0

    def new_input(v: Value) -> Value:
        t = retype(v.type)
        strides = t.strides if t.shape == v.type.shape and v.producer is None else None  # a strided input stays so
        nv = g.add_input(TensorType(t.shape, t.dtype, strides, t.device), f"x{len(g.inputs)}")
        env[id(v)] = nv
        return nv

    for v in graph.inputs:
        if id(v) in live:
            new_input(v)
    try:
        for n in graph.nodes:
            if not any(id(o) in live for o in n.outputs):
                continue
            if any(id(o) in fresh for o in n.outputs):
                for o in n.outputs:
                    if id(o) in live:
                        new_input(o)
                continue
            ins = [env[id(resolve(v))] if isinstance(v, Value) else v for v in n.inputs]
            attrs = reattr(n, dict(n.attrs)) if reattr else dict(n.attrs)
            k += 1
            node = g.add(n.op, ins, attrs, name=f"v{k}")
            for o, no in zip(n.outputs, node.outputs):
                env[id(o)] = no
        g.outputs = [env[id(resolve(v))] for v in outputs]
    except (OpError, KeyError, ValueError, IndexError, RuntimeError, TypeError):
        return None
    return g
