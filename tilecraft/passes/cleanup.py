"""Canonicalization, dead-code elimination and common-subexpression elimination."""
from __future__ import annotations

import torch

from ..ir import Graph, Value, is_view
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
    repl: dict[int, Value] = {}  # id(merged output) -> the kept node's output
    for node in graph.nodes:
        rewrite_inputs(node, repl)
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
            repl[id(old)] = new
    rewrite_outputs(graph, repl)
    graph.nodes = nodes
    return graph


def rewrite_inputs(node, repl: dict) -> None:
    """Replace node's inputs as `repl` ({id(old value): new value}) says. Passes that replace many values visit
    nodes in order and rewrite each one's inputs as they reach it: the same result as `graph.replace_all_uses`
    per value (producers come first, so every replacement is known by then), in one sweep, not one per value."""
    if repl and any(isinstance(v, Value) and id(v) in repl for v in node.inputs):
        node.inputs = [repl.get(id(v), v) if isinstance(v, Value) else v for v in node.inputs]


def rewrite_outputs(graph: Graph, repl: dict) -> None:
    if repl:
        graph.outputs = [repl.get(id(v), v) if isinstance(v, Value) else v for v in graph.outputs]


def _exact_round_trip(node) -> tuple[Value, list] | None:
    """(y, views) when node = cast(T)(views(cast(W)(y))) with y of dtype T and W a wider float type: every T
    value is exact in W, so the pair of casts is the identity (BERT's attention, fused into a bf16 SDPA, cast to
    the math path's fp32 and straight back)."""
    if node.op != "cast" or not isinstance(node.inputs[0], Value):
        return None
    views, v = [], node.inputs[0]
    while v.producer is not None and REGISTRY[v.producer.op].category == "view":
        views.append(v.producer)
        v = v.producer.inputs[0]
    p, t = v.producer, node.attrs["dtype"]
    if p is None or p.op != "cast" or not isinstance(p.inputs[0], Value) or p.inputs[0].type.dtype != t:
        return None
    w = v.type.dtype
    if not (t.is_floating_point and w.is_floating_point and w.itemsize > t.itemsize):
        return None
    return p.inputs[0], views[::-1]


def canonicalize(graph: Graph) -> Graph:
    """Normalize attributes (non-negative dims) and drop identity views and casts (also an exact round trip
    through a wider float type, whose views are then taken of the original value, and a reshape followed by its
    inverse); views are typed again from their inputs (a pass may have replaced an input by one laid out
    otherwise)."""
    repl: dict[int, Value] = {}  # id(output of a dropped identity) -> its input
    nodes = []
    for node in list(graph.nodes):
        rewrite_inputs(node, repl)
        nodes.append(node)
        if REGISTRY[node.op].category == "view" and node.inputs and isinstance(node.inputs[0], Value):
            t = REGISTRY[node.op].infer(node.inputs, node.attrs)[0]  # a view's type follows its input's, also
            if t != node.out.type:  # after a pass replaced that input by one laid out otherwise
                node.out.type = t
        trip = _exact_round_trip(node)
        if trip is not None and not any(node.out is o for o in graph.outputs):
            y, views = trip
            for view in views:
                nodes.append(graph.make_node(view.op, [y] + list(view.inputs[1:]), dict(view.attrs),
                                             source=view.source))
                y = nodes[-1].out
            repl[id(node.out)] = y
            continue
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
        if not identity and node.op == "view" and is_view(x.producer) and x.producer.op == "view" \
                and tuple(node.out.type.shape) == x.producer.inputs[0].type.shape:
            x = x.producer.inputs[0]  # a reshape and its inverse (an attention's [B*H, T, D] and back)
            identity = True
        if identity and not any(node.out is o for o in graph.outputs):
            repl[id(node.out)] = x
    graph.nodes = nodes
    rewrite_outputs(graph, repl)
    return dce(graph)
