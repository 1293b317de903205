"""tilecraft: a PyTorch compiler that emits fused, tuned Triton kernels.

Without CUDA, tilecraft's own Triton kernels run through Triton's interpreter (as if TRITON_INTERPRET=1 were set
while they are defined; see `codegen.kernel.own_kernels`); the process's environment is not changed.
"""
import os as _os
import sys as _sys


def _interpreted_triton() -> None:
    """Without CUDA, import Triton as TRITON_INTERPRET=1 would (its standard library, `tl.cdiv` and the like, is
    then callable from interpreted kernels), with the variable set for the import only. If Triton was already
    imported for compiled kernels, tilecraft's kernels cannot run here: say so (they run through torch)."""
    import torch

    if _os.environ.get("TRITON_INTERPRET") is not None or torch.cuda.is_available():
        return
    if "triton" in _sys.modules:
        import logging

        import triton.language.standard as std
        from triton.runtime.jit import JITFunction

        if isinstance(std.cdiv, JITFunction):
            logging.getLogger("tilecraft").warning(
                "tilecraft: Triton was imported before tilecraft on a machine without CUDA, so Triton's interpreter "
                "is off and tilecraft's kernels will run through torch; import tilecraft first or set "
                "TRITON_INTERPRET=1")
        return
    _os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
        try:  # Triton 3.6 imports gluon lazily on the first launch, and gluon checks the interpreter is on
            import triton.experimental.gluon  # noqa: F401
        except ImportError:
            pass
    finally:
        del _os.environ["TRITON_INTERPRET"]


_interpreted_triton()

from .compiler import CompiledModel, Options, compile, explain  # noqa: E402
from .quant import quantize  # noqa: E402  (also registers the quantized-linear ops)

__version__ = "0.1.0"
__all__ = ["compile", "explain", "quantize", "Options", "CompiledModel", "__version__"]
