"""The reference interpreter: runs a Graph node by node with each op's torch reference."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .graph import Graph
from .node import Node, Value
from .ops import get_op


class ExecutionError(RuntimeError):
    """An op failed at run time; the message names the node and its source."""


def call_node(node: Node, env: dict, ref: Callable | None = None, attrs: dict | None = None) -> list:
    """The node's outputs (a list) from its op's torch reference, or from `ref` with `attrs` where given; inputs
    are read from env (id(Value) -> tensor)."""
    args = [env[id(v)] if isinstance(v, Value) else v for v in node.inputs]
    out = (ref or get_op(node.op).ref)(*args, **(node.attrs if attrs is None else attrs))
    return list(out) if isinstance(out, (tuple, list)) else [out]


def run_node(node: Node, env: dict) -> list:
    """call_node, with a failure re-raised as an ExecutionError naming the node and its source."""
    try:
        return call_node(node, env)
    except Exception as e:  # noqa: BLE001 - re-raised naming the node
        src = f" (from {node.source})" if node.source else ""
        raise ExecutionError(f"{node.op}{src} failed: {type(e).__name__}: {e}") from e


def evaluate(graph: Graph, inputs: Sequence, run: Callable[[Node, dict], list] = run_node) -> dict[int, object]:
    """Every value of the graph (id(Value) -> tensor): the inputs, then each node's outputs from run(node, env)."""
    env: dict[int, object] = {id(v): t for v, t in zip(graph.inputs, inputs)}
    for node in graph.nodes:
        for o, t in zip(node.outputs, run(node, env)):
            env[id(o)] = t
    return env


def interpret(graph: Graph, inputs: Sequence[torch.Tensor]) -> list:
    """Run the graph on real tensors and return its outputs."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = evaluate(graph, inputs)
    return [env[id(v)] if isinstance(v, Value) else v for v in graph.outputs]
