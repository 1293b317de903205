"""Canonicalization, dead-code elimination and common-subexpression elimination."""
from __future__ import annotations

import torch

from ..ir import Graph, Value
from ..ir.ops import REGISTRY, norm_dims


def dce(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs reach a graph output."""
    live = {id(v) for v in graph.outputs if isinstance(v, Value)}
    kept = []
    for node in reversed(graph.nodes):
        if any(id(o) in live for o in node.outputs):
            kept.append(node)
            live.update(id(v) for v in node.input_values())
    graph.nodes = kept[::-1]
    return graph


def _key(x):
    if isinstance(x, Value):
        return ("v", id(x))
    if isinstance(x, torch.Tensor):
        return ("t", id(x))
    if isinstance(x, (list, tuple)):
        return tuple(_key(y) for y in x)
    if isinstance(x, dict):
        return tuple(sorted((k, _key(v)) for k, v in x.items()))
    if isinstance(x, float) and x != x:
        return ("nan",)
    return (type(x).__name__, x if not callable(x) else id(x))


def cse(graph: Graph) -> Graph:
    """Merge nodes that apply the same op to the same inputs with the same attributes."""
    seen: dict = {}
    nodes = []
    for node in graph.nodes:
        if node.op in ("torch_op",):  # may be random or effectful
            nodes.append(node)
            continue
        k = (node.op, _key(node.inputs), _key(node.attrs))
        prev = seen.get(k)
        if prev is None:
            seen[k] = node
            nodes.append(node)
            continue
        for old, new in zip(node.outputs, prev.outputs):
            graph.replace_all_uses(old, new)
    graph.nodes = nodes
    return graph


def canonicalize(graph: Graph) -> Graph:
    """Normalize attributes (non-negative dims) and drop identity views and casts."""
    for node in list(graph.nodes):
        x = node.inputs[0] if node.inputs and isinstance(node.inputs[0], Value) else None
        if x is None:
            continue
        rank = x.type.rank
        dim_attr = REGISTRY[node.op].dim_attr
        if dim_attr == "dims" and node.attrs.get("dim") is not None:
            node.attrs["dim"] = norm_dims(node.attrs["dim"], rank) if rank else node.attrs["dim"]
        elif dim_attr == "dim" and isinstance(node.attrs.get("dim"), int) and rank:
            node.attrs["dim"] %= rank
        identity = (node.op in ("alias", "copy") or
                    node.op == "cast" and node.attrs["dtype"] == x.type.dtype or
                    node.op in ("view", "expand") and tuple(node.out.type.shape) == x.type.shape and
                    node.out.type.strides == x.type.strides or
                    node.op == "permute" and list(node.attrs["dims"]) == list(range(rank)))
        if identity and not any(node.out is o for o in graph.outputs):
            graph.replace_all_uses(node.out, x)
    return dce(graph)
