"""A deterministic, readable text form of a Graph."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .node import Node, Value

if TYPE_CHECKING:
    from .graph import Graph


def format_attr(v) -> str:
    if isinstance(v, torch.dtype):
        return str(v).replace("torch.", "")
    if isinstance(v, torch.Tensor):
        return f"tensor<{str(v.dtype).replace('torch.', '')}[{','.join(map(str, v.shape))}]>"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        inner = ", ".join(format_attr(x) for x in v)
        return f"[{inner}]"
    if isinstance(v, Value):
        return f"%{v.name}"
    if callable(v):
        return getattr(v, "__name__", None) or str(v)
    return repr(v) if isinstance(v, str) else str(v)


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{o.name}: {o.type}" for o in node.outputs)
    args = ", ".join(format_attr(v) for v in node.inputs)
    attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(node.attrs.items()))
    s = f"{outs} = {node.op}({args}"
    if attrs:
        s += (", " if args else "") + attrs
    return s + ")"


def format_graph(graph: Graph, name: str = "graph") -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"{name}({ins}) {{"]
    lines += ["  " + format_node(n) for n in graph.nodes]
    lines.append("  return " + ", ".join(format_attr(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
