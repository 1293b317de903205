"""Runtimes for a compiled graph."""
from __future__ import annotations

from ..ir import Graph, interpret


class InterpretedProgram:
    """Runs the IR with each op's torch reference (used when codegen is off or unavailable)."""

    kernels: list = []

    def __init__(self, graph: Graph):
        self.graph = graph

    def __call__(self, *args):
        return interpret(self.graph, list(args))

    def explain(self) -> str:
        return "---- runtime ----\nreference interpreter (no generated kernels)"


def build_kernel_program(graph: Graph, options):
    """Generated-kernel runtime; None until codegen can take this graph."""
    return None
