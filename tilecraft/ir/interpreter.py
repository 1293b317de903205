"""The reference interpreter: runs a Graph node by node with each op's torch reference."""
from __future__ import annotations

from typing import Sequence

import torch

from .graph import Graph, Node, Value
from .ops import get_op


class ExecutionError(RuntimeError):
    """An op failed at run time; the message names the node and its source."""


def run_node(node: Node, env: dict) -> list:
    args = [env[id(v)] if isinstance(v, Value) else v for v in node.inputs]
    try:
        out = get_op(node.op).ref(*args, **node.attrs)
    except Exception as e:  # noqa: BLE001 - re-raised naming the node
        src = f" (from {node.source})" if node.source else ""
        raise ExecutionError(f"{node.op}{src} failed: {type(e).__name__}: {e}") from e
    return list(out) if isinstance(out, (tuple, list)) else [out]


def interpret(graph: Graph, inputs: Sequence[torch.Tensor]) -> list:
    """Run the graph on real tensors and return its outputs."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[int, object] = {id(v): t for v, t in zip(graph.inputs, inputs)}
    for node in graph.nodes:
        for o, t in zip(node.outputs, run_node(node, env)):
            env[id(o)] = t
    return [env[id(v)] if isinstance(v, Value) else v for v in graph.outputs]
