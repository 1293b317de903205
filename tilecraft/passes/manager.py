"""The pass manager: runs graph-to-graph passes in order, verifying after each and recording the IR."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..ir import Graph, format_graph, verify

Pass = Callable[[Graph], Graph]


@dataclass
class PassTrace:
    """What each pass did: its name, the IR after it, and how long it took; `unchanged` names the passes that
    left the graph as it was (explain and the `tilecraft_graphs` log show only the others)."""

    steps: list[tuple[str, str, float]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def record(self, name: str, graph: Graph, seconds: float) -> None:
        text = format_graph(graph, name)
        if self.steps and text.partition("(")[2] == self.steps[-1][1].partition("(")[2]:
            self.unchanged.append(name)
            return
        self.steps.append((name, text, seconds))


def run_passes(graph: Graph, passes: list[tuple[str, Pass]], trace: PassTrace | None = None,
               check: bool = True) -> Graph:
    if trace is not None:
        trace.record("import", graph, 0.0)
    for name, p in passes:
        t0 = time.perf_counter()
        graph = p(graph)
        if check:
            try:
                verify(graph)
            except Exception as e:
                raise RuntimeError(f"pass {name} produced an invalid graph: {e}") from e
        if trace is not None:
            trace.record(name, graph, time.perf_counter() - t0)
    return graph
