"""Fusion: partition the graph's compute nodes into groups that each become one kernel.

View ops never form groups: codegen turns them into index arithmetic inside whichever kernel reads them.
Compute nodes are grouped greedily in topological order; each merge is one named rule, and a merge is only
made when the group graph stays acyclic (checked with networkx). Nodes that no template covers run through
torch as single-node "torch" groups.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx

from ..ir import CODEGEN_DTYPES, REGISTRY, Graph, Node, Value, base_value, is_view
from ..ir.ops import norm_dims


@dataclass(eq=False)
class Group:
    kind: str  # "pointwise" | "reduction" | "matmul" (one matmul, or two sharing A: "matmul-dual") | "qmatmul"
    # (one quantized linear and its epilogue) | "torch"
    nodes: list[Node]
    shape: tuple[int, ...]  # iteration shape: pointwise/matmul output shape, reduction input shape
    dims: tuple[int, ...] = ()  # reduced dims (reduction groups)
    rules: list[str] = field(default_factory=list)  # the fusion rules that built this group
    # a "combined" pointwise group: independent pointwise groups of other shapes in one launch, one program range
    # per part (see combine_pointwise); `nodes` then holds all their nodes, `shape` the first part's
    parts: list["Group"] = field(default_factory=list)

    @property
    def reduced_shape(self) -> tuple[int, ...]:
        return tuple(1 if i in self.dims else s for i, s in enumerate(self.shape))

    def describe(self) -> str:
        if self.parts:
            return " + ".join(p.describe() for p in self.parts)
        ops = " → ".join(n.op for n in self.nodes)
        extra = f" over dims {list(self.dims)}" if self.kind == "reduction" else ""
        return f"{self.kind}[{','.join(map(str, self.shape))}]{extra}: {ops}"


def matmul_lhs(node: Node) -> Value:
    """A of a matmul node (addmm's inputs are bias, A, B)."""
    return node.inputs[1] if node.op == "addmm" else node.inputs[0]


def node_kind(node: Node) -> str:
    """The template that computes node ("pointwise", "reduction", "matmul"), "view" for index arithmetic, or
    "torch": what its registry entry says the templates take, checked against this node's dtypes and sizes."""
    d = REGISTRY[node.op]
    if d.template is None or not all(v.type.dtype in CODEGEN_DTYPES for v in node.input_values() + node.outputs):
        return "torch"
    if not all(v.type.dtype in d.dtypes for v in node.input_values()) or (d.accepts and not d.accepts(node)):
        return "torch"
    return d.template


def is_reduction(node: Node) -> bool:
    return REGISTRY[node.op].reduce is not None


def is_matmul(node: Node) -> bool:
    return REGISTRY[node.op].template == "matmul"


def cublas_gemms(v: Value) -> bool:
    """Do matmuls on v's device run through cuBLAS by default (codegen's "aten" backend, on CUDA), their
    epilogue as a kernel of its own? (Elsewhere the Triton template fuses it.)"""
    return v.type.device == "cuda"


def residual_for_a_norm(add: Node, mm_op: str, readers: list[Node]) -> bool:
    """On CUDA a matmul runs in cuBLAS (the "aten" backend) and its epilogue as a kernel of its own. A residual
    add right after an addmm, whose bias already takes cuBLAS's added operand, would cost that kernel a full
    pass (read the product and r, write the sum) before the next LayerNorm reads the sum again; read by a
    reduction (`readers`: the add's readers through views), the add goes into the reduction's prologue instead
    (one kernel adds on load, stores the sum and the norm: GPT-2, OPT, BERT, NeoX). So the partitioner keeps it
    out of the matmul's epilogue and sink_views keeps it in the norm's shape. Elsewhere (the Triton template)
    the epilogue is the cheaper place."""
    return add.op == "add" and mm_op == "addmm" and cublas_gemms(add.outputs[0]) and any(
        is_reduction(u) for u in readers)


def reduction_dims(node: Node) -> tuple[int, ...]:
    x, reduce = node.inputs[0].type, REGISTRY[node.op].reduce
    if reduce.dims is not None:
        return tuple(reduce.dims(node.attrs, x.rank))
    return tuple(norm_dims(node.attrs.get("dim"), x.rank))


def _trivial_path(v: Value, group_values: set) -> bool:
    """Is v a group value, possibly through views that only add or drop size-1 dims (rows unchanged)?"""
    while id(v) not in group_values:
        p = v.producer
        if p is None or REGISTRY[p.op].category != "view":
            return False
        src = p.inputs[0]
        if p.op == "permute" or p.op == "slice" or p.op == "select" or p.op == "as_strided":
            return False
        if [s for s in src.type.shape if s != 1] != [s for s in v.type.shape if s != 1] and p.op != "expand":
            return False
        if p.op == "expand" and any(a != b and a != 1 for a, b in zip(src.type.shape[::-1], v.type.shape[::-1])):
            return False
        v = src
    return True


def _reads_own_rows(node: Node, g: Group, inside: set) -> bool:
    """Does a full-shape node read each per-row value of reduction group g at its own row? Broadcasting aligns
    shapes from the right, so a squeezed row value ([R]) read by a [R, C] node is indexed by the column: such a
    node cannot be the reduction's epilogue (each program holds only its rows' results)."""
    full = [d for d, s in enumerate(g.shape) if s != 1]
    kept = [d for d in full if d not in g.dims]
    for v in node.input_values():
        if id(base_value(v)) not in inside:
            continue
        while v.producer is not None and v.producer.op == "expand":  # an explicit broadcast, also right-aligned
            v = v.producer.inputs[0]
        lead = len(g.shape) - v.type.rank
        pos = [d + lead for d, s in enumerate(v.type.shape) if s != 1]
        if pos != full and pos != kept:
            return False
    return True


class Partitioner:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.group_of: dict[int, Group] = {}  # node id -> group
        self.groups: list[Group] = []
        self.dag = nx.DiGraph()  # group-level dependencies
        self.readers: dict[int, list[Group]] = {}  # base input value id -> groups reading it
        self.users = graph.users()
        self.outputs = {id(v) for v in graph.outputs}

    def producers(self, node: Node) -> list[Group]:
        out = []
        for v in node.input_values():
            b = base_value(v)
            g = self.group_of.get(id(b.producer)) if b.producer is not None else None
            if g is not None and g not in out:
                out.append(g)
        return out

    def group_values(self, g: Group) -> set:
        return {id(o) for n in g.nodes for o in n.outputs}

    def can_join(self, node: Node, kind: str, g: Group) -> str | None:
        """The rule that lets `node` join group `g`, or None."""
        out = node.outputs[0].type.shape
        if kind == "pointwise":
            if g.kind == "pointwise" and out == g.shape:
                return "pointwise-chain"
            inside = self.group_values(g)
            direct = all(_trivial_path(v, inside) or base_value(v).producer is None or
                         id(base_value(v)) not in inside for v in node.input_values())
            if not direct:
                return None
            if g.kind == "reduction" and out in (g.shape, g.reduced_shape, self._squeezed(g)):
                return "reduction-epilogue" if out != g.shape or _reads_own_rows(node, g, inside) else None
            if g.kind in ("matmul", "qmatmul") and out == g.shape and not self._feeds_only_reductions(node) \
                    and not self._widens_a_stored_value(node) and not self._residual_for_a_norm(node, g):
                return f"{g.kind}-epilogue"
            return None
        if kind == "reduction":
            x = node.inputs[0]
            if x.type.shape != g.shape or not _trivial_path(x, self.group_values(g)):
                return None
            if g.kind == "pointwise":
                return "reduction-prologue"
            if g.kind == "reduction" and reduction_dims(node) == g.dims:
                return "multi-reduction"
        return None

    def _residual_for_a_norm(self, node: Node, g: Group) -> bool:
        """(see residual_for_a_norm) node would be the first epilogue op of a group holding one addmm."""
        return node.op == "add" and len(g.nodes) == 1 and residual_for_a_norm(node, g.nodes[0].op,
                                                                                   self._uses(node.outputs[0]))

    def _widens_a_stored_value(self, node: Node) -> bool:
        """A widening cast (bf16 -> fp32) of a value that is stored anyway: in the epilogue it would add a store
        of twice the bytes, and hold a bias-free `mm + r` back from cuBLAS's addmm (LLaMA's residual add, then
        RMSNorm's fp32 cast). Its readers cast on load instead."""
        if node.op != "cast" or not node.inputs or not isinstance(node.inputs[0], Value):
            return False
        src = node.inputs[0]
        if node.outputs[0].type.dtype.itemsize <= src.type.dtype.itemsize:
            return False
        return self._escapes(src) or any(u is not node for u in self._uses(src))

    def _feeds_only_reductions(self, node: Node) -> bool:
        """Cheaper recomputed in the reduction's prologue than written out by a matmul and read back."""
        uses = self._uses(node.outputs[0])
        return bool(uses) and not self._escapes(node.outputs[0]) and all(is_reduction(u) for u in uses)

    @staticmethod
    def _squeezed(g: Group):
        return tuple(s for i, s in enumerate(g.shape) if i not in g.dims)

    def would_cycle(self, node: Node, g: Group) -> bool:
        """Joining g would create a cycle if some other producer group of node depends on g."""
        for p in self.producers(node):
            if p is not g and p in self.dag and g in self.dag and nx.has_path(self.dag, g, p):
                return True
        return False

    def add_to(self, g: Group, node: Node, rule: str | None):
        g.nodes.append(node)
        for v in node.input_values():
            rs = self.readers.setdefault(id(base_value(v)), [])
            if g not in rs:
                rs.append(g)
        if rule and rule not in g.rules:
            g.rules.append(rule)
        self.group_of[id(node)] = g
        for p in self.producers(node):
            if p is not g:
                self.dag.add_edge(p, g)

    def new_group(self, node: Node, kind: str) -> Group:
        if kind == "reduction":
            g = Group(kind, [], node.inputs[0].type.shape, reduction_dims(node))
        elif kind in ("pointwise", "matmul", "qmatmul"):
            g = Group(kind, [], node.outputs[0].type.shape)
        else:
            g = Group("torch", [], node.outputs[0].type.shape if node.outputs else ())
        self.groups.append(g)
        self.dag.add_node(g)
        self.add_to(g, node, None)
        return g

    def run(self) -> list[Group]:
        for node in self.graph.nodes:
            kind = node_kind(node)
            if kind == "view":
                continue
            if node.op == "sumsq_tiles" and self.join_qmatmul_sums(node):
                continue
            if kind == "torch":
                self.new_group(node, kind)
                continue
            if kind == "matmul":
                g = self.join_dual(node) or self.new_group(node, kind)
                self.merge_producers(node, g, max_nodes=4, rule="matmul-prologue")
                continue
            if kind == "qmatmul":  # no prologue: the template loads its activation rows as they are
                self.new_group(node, kind)
                continue
            joined = None
            for g in reversed(self.producers(node)):
                rule = self.can_join(node, kind, g)
                if rule and not self.would_cycle(node, g):
                    if kind == "reduction" and g.kind == "pointwise":
                        g.kind, g.dims = "reduction", reduction_dims(node)
                    self.add_to(g, node, rule)
                    joined = g
                    break
            if joined is None:
                joined = self.join_sibling(node, kind)
            if joined is None:
                joined = self.new_group(node, kind)
            self.merge_producers(node, joined)
        return self.order()

    def join_qmatmul_sums(self, node: Node) -> bool:
        """passes.fold_rms_norm's partial sums of squares of a value a quantized GEMM's epilogue computes: that
        epilogue writes them too (rule "qmatmul-sumsq"; elsewhere they run through torch)."""
        h = node.inputs[0]
        g = self.group_of.get(id(h.producer)) if h.producer is not None else None
        if g is None or g.kind != "qmatmul" or h.type.shape != g.shape or self.would_cycle(node, g) or any(
                n.attrs.get("pair") for n in g.nodes):
            return False
        self.add_to(g, node, "qmatmul-sumsq")
        return True

    def join_dual(self, node: Node) -> Group | None:
        """Dual GEMM: a matmul joins a one-matmul group that multiplies the same 2-D A into an output of the same
        shape, when pointwise ops combine the two results (SwiGLU's silu(x @ Wg) * (x @ Wu)). One kernel then
        loads each A tile once for both dots and stores only the combination."""
        if node.op == "bmm":
            return None
        a, out = matmul_lhs(node), node.out.type
        for g in self.readers.get(id(base_value(a)), []):
            mms = [n for n in g.nodes if is_matmul(n)]
            if g.kind != "matmul" or len(mms) != 1 or mms[0].op == "bmm" or matmul_lhs(mms[0]) is not a:
                continue
            first = mms[0].out
            if (first.type.shape, first.type.dtype) != (out.shape, out.dtype) or g in self.producers(node):
                continue  # a B operand computed from g's own result cannot be loaded inside g
            if self.would_cycle(node, g) or not self._pointwise_reach(first) & self._pointwise_reach(node.out):
                continue
            self.add_to(g, node, "matmul-dual")
            return g
        return None

    def _pointwise_reach(self, v: Value) -> set:
        """Ids of the pointwise nodes of v's shape that read v, directly or through such nodes."""
        seen, todo, shape = set(), [v], v.type.shape
        while todo:
            for u in self._uses(todo.pop()):
                if id(u) not in seen and node_kind(u) == "pointwise" and u.out.type.shape == shape:
                    seen.add(id(u))
                    todo.append(u.out)
        return seen

    def join_sibling(self, node: Node, kind: str) -> Group | None:
        """Horizontal fusion: join a group that reads the same input over the same iteration space."""
        for v in node.input_values():
            for g in self.readers.get(id(base_value(v)), []):
                if g.kind == "torch" or self.would_cycle(node, g):
                    continue
                if kind == "pointwise" and g.kind in ("pointwise", "reduction") and \
                        node.outputs[0].type.shape == g.shape and (
                        g.kind == "pointwise" or _reads_own_rows(node, g, self.group_values(g))):
                    rule = "horizontal"
                elif kind == "reduction" and g.kind == "reduction" and node.inputs[0].type.shape == g.shape \
                        and reduction_dims(node) == g.dims:
                    rule = "sibling-reduction"
                else:
                    continue
                self.add_to(g, node, rule)
                return g
        return None

    def merge_producers(self, node: Node, g: Group, max_nodes: int = 1 << 30, rule: str = "merge-producers") -> None:
        """Pull pointwise producer groups whose every value is used only inside g into g (no stores)."""
        if g.kind in ("torch", "qmatmul"):  # a quantized-matmul kernel reads its operands as stored tensors
            return
        for p in self.producers(node):
            if p is g or p.kind != "pointwise" or (g.kind == "reduction" and p.shape != g.shape):
                continue
            if len(p.nodes) > max_nodes or (g.kind == "matmul" and not all(
                    n.out.type.dtype.is_floating_point for n in p.nodes)):
                continue
            inside = {id(n) for n in g.nodes} | {id(n) for n in p.nodes}
            private = all(not self._escapes(o) and all(id(u) in inside for u in self._uses(o))
                          for n in p.nodes for o in n.outputs)
            if not (private or p.shape == g.shape and g.kind != "matmul"):
                continue
            direct = self.dag.has_edge(p, g)
            if direct:
                self.dag.remove_edge(p, g)
            indirect = nx.has_path(self.dag, p, g)  # p reaches g through another group: a merge makes a cycle
            if direct:
                self.dag.add_edge(p, g)
            if indirect:
                continue
            for n in p.nodes:
                g.nodes.append(n)
                self.group_of[id(n)] = g
            for r in self.readers.values():
                if p in r:
                    r.remove(p)
                    if g not in r:
                        r.append(g)
            for pred in list(self.dag.predecessors(p)):
                if pred is not g:
                    self.dag.add_edge(pred, g)
            for succ in list(self.dag.successors(p)):
                if succ is not g:
                    self.dag.add_edge(g, succ)
            self.dag.remove_node(p)
            self.groups.remove(p)
            if rule not in g.rules:
                g.rules.append(rule)

    def _escapes(self, v: Value) -> bool:
        """Is v, or a view of it, a graph output (so it must be stored)?"""
        if id(v) in self.outputs:
            return True
        return any(is_view(u) and self._escapes(u.outputs[0]) for u in self.users.get(v, []))

    def _uses(self, v: Value) -> list[Node]:
        """Compute nodes that read v, looking through views."""
        out = []
        for u in self.users.get(v, []):
            if is_view(u):
                out += self._uses(u.outputs[0])
            else:
                out.append(u)
        return out

    def order(self) -> list[Group]:
        """Groups in an order that respects dependencies (and the original node order where free)."""
        pos = {id(n): i for i, n in enumerate(self.graph.nodes)}
        for g in self.groups:
            g.nodes.sort(key=lambda n: pos[id(n)])
        first = {g: pos[id(g.nodes[0])] for g in self.groups}
        return list(nx.lexicographical_topological_sort(self.dag, key=lambda g: first[g]))


def partition(graph: Graph) -> list[Group]:
    """Split the graph's compute nodes into fusion groups, in an executable order."""
    return combine_pointwise(Partitioner(graph).run())


COMBINE_MAX_NUMEL = 1 << 20  # combined pointwise parts: sizes where a launch costs about as much as the work


def combine_pointwise(groups: list[Group], max_numel: int = COMBINE_MAX_NUMEL) -> list[Group]:
    """Horizontal fusion across iteration spaces: a small pointwise group joins an earlier one of another shape
    (rule "combined": one launch, one program range per part) when both read a common tensor and everything it
    reads is computed before that earlier group, so it can run there. RoPE's rotations of q and k (16 and 4 heads
    in LLaMA-492M, both reading cos and sin) become one launch per layer. `groups` is in executable order."""
    group_of = {id(n): g for g in groups for n in g.nodes}
    pos = {id(g): i for i, g in enumerate(groups)}
    reads: dict[int, set] = {}  # id(group) -> ids of the values it reads from outside itself
    numel: dict[int, int] = {}  # id(group) -> elements over all its parts

    def small(g: Group) -> bool:
        return g.kind == "pointwise" and not g.parts and math.prod(g.shape) <= max_numel

    out: list[Group] = []
    for g in groups:
        if small(g):
            inside = {id(n) for n in g.nodes}
            ins = [b for n in g.nodes for v in n.input_values()
                   if (b := base_value(v)).producer is None or id(b.producer) not in inside]
            reads[id(g)], numel[id(g)] = {id(b) for b in ins}, math.prod(g.shape)
            first = max((pos[id(group_of[id(b.producer)])] for b in ins if b.producer is not None), default=-1)
            host = None
            for h in reversed(out):  # (in executable order: none before `first` can run g's part)
                if pos[id(h)] <= first:
                    break
                if id(h) in reads and reads[id(g)] & reads[id(h)] and numel[id(h)] + numel[id(g)] <= max_numel:
                    host = h
                    break
            if host is not None:
                if not host.parts:
                    host.parts = [Group("pointwise", list(host.nodes), host.shape, rules=list(host.rules))]
                host.parts.append(g)
                host.nodes = host.nodes + g.nodes
                reads[id(host)] |= reads[id(g)]
                numel[id(host)] += numel[id(g)]
                if "combined" not in host.rules:
                    host.rules.append("combined")
                continue
        out.append(g)
    return out


def format_groups(groups: list[Group]) -> str:
    lines = []
    for i, g in enumerate(groups):
        rules = f"  (rules: {', '.join(g.rules)})" if g.rules else ""
        lines.append(f"group {i}: {g.describe()}{rules}")
    return "\n".join(lines)
