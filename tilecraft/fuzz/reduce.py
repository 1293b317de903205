"""Test-case reduction: delta debugging over the graph to a minimal model that fails the same way.

Candidates, tried until none helps: keep fewer outputs; drop chunks of nodes (ddmin), their values replaced by
fresh graph inputs; bypass single nodes (uses rewired to a same-typed input); simplify dtypes to float32; shrink
dim sizes. A candidate is kept when it rebuilds as a valid graph (every node re-added with `Graph.add`), fit
inputs exist, and the oracle gives the same failure key (class + exception type + message pattern).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..ir import Graph, TensorType, copy_graph
from .case import CaseResult, check_graph

SIZE_ATTRS = ("size", "normalized_shape")


@dataclass
class Reduction:
    """The result of reducing a failing case."""

    original: CaseResult
    reduced: CaseResult
    checks: int
    seconds: float
    steps: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.original.verdict.key


class Reducer:
    """Delta debugging for one failing graph under one backend, with a budget of oracle checks and seconds."""

    def __init__(self, backend="tilecraft", max_checks: int = 300, max_seconds: float = 120.0, seed: int = 0,
                 device: str = "cpu"):
        self.backend, self.max_checks, self.max_seconds, self.seed = backend, max_checks, max_seconds, seed
        self.device = device
        self.checks = 0
        self.t0 = 0.0

    def out_of_budget(self) -> bool:
        return self.checks >= self.max_checks or time.perf_counter() - self.t0 > self.max_seconds

    def still_fails(self, g: Graph | None, key: str) -> CaseResult | None:
        if g is None or not g.nodes or self.out_of_budget():
            return None
        self.checks += 1
        res = check_graph(g, self.backend, self.seed, device=self.device)
        if res.verdict is not None and res.verdict.key == key:
            return res
        return None

    def reduce(self, case: CaseResult) -> Reduction:
        """Reduce `case` (which must have failed) to a small graph failing with the same key."""
        assert case.verdict is not None and case.verdict.failed, "only failing cases can be reduced"
        self.t0 = time.perf_counter()
        key = case.verdict.key
        best, steps = case, []
        changed = True
        while changed and not self.out_of_budget():
            changed = False
            for name, cands in (("outputs", self._fewer_outputs), ("drop", self._ddmin),
                                ("bypass", self._bypass), ("float32", self._float32), ("shrink", self._shrink)):
                for g in cands(best.graph):
                    res = self.still_fails(g, key)
                    if res is not None and _size(res.graph) < _size(best.graph):
                        best, changed = res, True
                        steps.append(f"{name}: {len(best.graph.nodes)} nodes, {_numel(best.graph)} elements")
                        break
                    if self.out_of_budget():
                        break
                if changed:
                    break
        return Reduction(case, best, self.checks, time.perf_counter() - self.t0, steps)

    # -- candidate generators (each yields graphs, most aggressive first)
    def _fewer_outputs(self, g: Graph):
        if len(g.outputs) > 1:
            for v in g.outputs:
                yield copy_graph(g, outputs=[v])

    def _ddmin(self, g: Graph):
        nodes = [n for n in g.nodes]
        chunk = max(1, len(nodes) // 2)
        while chunk >= 1:
            for i in range(0, len(nodes), chunk):
                drop = {id(o) for n in nodes[i:i + chunk] for o in n.outputs}
                if len(drop) == sum(len(n.outputs) for n in nodes):
                    continue
                yield copy_graph(g, fresh=drop)
            if chunk == 1:
                break
            chunk //= 2

    def _bypass(self, g: Graph):
        for n in reversed(g.nodes):
            for v in n.input_values():
                if v.type.shape == n.out.type.shape and v.type.dtype == n.out.type.dtype and len(n.outputs) == 1:
                    yield copy_graph(g, bypass={id(n.out): v})
                    break

    def _float32(self, g: Graph):
        if all(v.type.dtype in (torch.float32,) or not v.type.dtype.is_floating_point for v in g.values()):
            return

        def retype(t):
            return TensorType(t.shape, torch.float32 if t.dtype.is_floating_point else t.dtype)

        def reattr(n, a):
            if n.op == "cast" and a["dtype"].is_floating_point:
                a["dtype"] = torch.float32
            return a

        yield copy_graph(g, retype=retype, reattr=reattr)

    def _shrink(self, g: Graph):
        sizes = sorted({s for v in g.inputs for s in v.type.shape if s > 1}, reverse=True)
        for s in sizes:
            for new in sorted({1, 2, s // 2} - {s}):
                yield copy_graph(g, retype=lambda t, s=s, new=new: TensorType(
                    tuple(new if d == s else d for d in t.shape), t.dtype), reattr=_size_attr_mapper(s, new))


def _size_attr_mapper(old: int, new: int):
    def reattr(n, a):
        for k in SIZE_ATTRS:
            if isinstance(a.get(k), (list, tuple)):
                a[k] = [new if d == old else d for d in a[k]]
        if n.op == "slice":
            dim_size = n.inputs[0].type.shape[a.get("dim", 0)]
            if dim_size == old:
                end = a.get("end")
                a["start"] = min(a.get("start") or 0, new - 1)
                if end is not None:
                    a["end"] = max(a["start"] + 1, min(end, new))
        if n.op == "select" and n.inputs[0].type.shape[a["dim"]] == old:
            a["index"] = min(a["index"], new - 1)
        return a
    return reattr


def _numel(g: Graph) -> int:
    return sum(v.type.numel for v in g.inputs)


def _size(g: Graph) -> tuple[int, int, int]:
    """Order of 'smaller': fewer nodes, then fewer non-float32 values, then fewer input elements."""
    non32 = sum(1 for v in g.values() if v.type.dtype in (torch.float16, torch.bfloat16, torch.float64))
    return (len(g.nodes), non32, _numel(g))


def _docsafe(text: str) -> str:
    """Text that can sit inside a triple-quoted docstring."""
    return text.replace(chr(92), "/").replace(chr(34) * 3, "'")


def repro_test(red: Reduction, backend="tilecraft", name: str = "fuzz_repro", device: str = "cpu") -> str:
    """A pytest file: the reduced program (self-contained torch source) and an eager-vs-compiled check."""
    case = red.reduced
    inp = case.inputs
    compile_line = {"tilecraft": "compiled = tilecraft.compile(model)",
                    "tilecraft-interpreted": "compiled = tilecraft.compile(model, codegen=False)"}.get(
        backend, f"compiled = torch.compile(model, backend={backend!r}, dynamic=False)")
    src = case.source.split('"""', 2)[2].lstrip("\n")  # drop the program docstring; the test has its own
    first = _docsafe(case.verdict.message.splitlines()[0] if case.verdict.message else "")
    return f'''"""Regression test reduced by tilecraft.fuzz ({len(case.graph.nodes)} ops, from {len(red.original.graph.nodes)}).

Failure when found: {_docsafe(red.key)}
  {first}
"""
{src}

def test_{name}():
    import tilecraft
    from tilecraft.testing import assert_close

    torch._dynamo.reset()
    model = FuzzModel().eval()
    device = {device!r} if torch.cuda.is_available() else "cpu"
    inputs = make_inputs(seed={inp.seed}, scale={inp.scale!r}, positive={inp.positive!r}, device=device)
    with torch.no_grad():
        expected = model(*[x.clone() for x in inputs])
        {compile_line}
        got = compiled(*[x.clone() for x in inputs])
    assert_close(got, expected, msg="compiled vs eager")
    fell_back = getattr(getattr(compiled, "report", None), "fell_back", lambda: [])()
    assert not fell_back, f"kernels fell back to torch: {{fell_back}}"
'''
