"""Capture from PyTorch, the compile pipeline, the runtime, and the torch.compile backend."""
from .api import CompiledModel, CompileReport, Options, compile, compile_graph, explain, make_backend
from .capture import CaptureError, import_fx

__all__ = ["compile", "explain", "make_backend", "compile_graph", "Options", "CompiledModel", "CompileReport",
           "import_fx", "CaptureError"]
