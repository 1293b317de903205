"""SSA values and nodes. A node names its registry op; the graph (graph.py) orders nodes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

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
