"""The tensor IR: types, SSA graph, op registry, verifier, printer and reference interpreter."""
from .graph import Graph, Node, Value
from .interpreter import ExecutionError, interpret
from .ops import ATEN_TO_OP, CATEGORIES, REGISTRY, OpDef, OpError, get_op
from .printer import format_graph, format_node
from .types import TensorType, contiguous_strides
from .verify import VerifyError, verify

__all__ = ["Graph", "Node", "Value", "TensorType", "contiguous_strides", "OpDef", "OpError", "REGISTRY",
           "ATEN_TO_OP", "CATEGORIES", "get_op", "verify", "VerifyError", "format_graph", "format_node",
           "interpret", "ExecutionError"]
