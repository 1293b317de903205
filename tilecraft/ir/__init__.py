"""The tensor IR: types, SSA graph, op registry, verifier, printer and reference interpreter.

Modules import one way only: types -> node (Value, Node) -> ops (the registry) -> printer -> graph (Graph and
the helpers that walk or rebuild one) -> interpreter, verify.
"""
from .graph import Graph, Node, Value, base_value, copy_graph, is_view
from .interpreter import ExecutionError, evaluate, interpret
from .ops import ATEN_TO_OP, CATEGORIES, CODEGEN_DTYPES, REGISTRY, OpDef, OpError, get_op
from .printer import format_graph, format_node
from .types import TensorType, contiguous_strides, next_pow2
from .verify import VerifyError, verify

__all__ = ["Graph", "Node", "Value", "TensorType", "contiguous_strides", "next_pow2", "OpDef", "OpError",
           "REGISTRY", "ATEN_TO_OP", "CATEGORIES", "CODEGEN_DTYPES", "get_op", "verify", "VerifyError",
           "format_graph", "format_node", "interpret", "evaluate", "ExecutionError", "is_view", "base_value",
           "copy_graph"]
