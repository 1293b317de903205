"""tilecraft: a PyTorch compiler that emits fused, tuned Triton kernels.

Without CUDA, tilecraft's own Triton kernels run through Triton's interpreter (as if TRITON_INTERPRET=1 were set
while they are defined; see `codegen.kernel.own_kernels`); the process's environment is not changed.
"""
import os as _os
import sys as _sys


def _interpreted_triton() -> None:
    """Without CUDA, tilecraft's kernels run through Triton's interpreter, which needs Triton's standard library
    (`tl.cdiv`, `tl.sum`, ...) in its interpreted form, as TRITON_INTERPRET=1 at `import triton` makes it. So:
    Triton not imported yet: import it with the variable set for the import only. Already imported for
    compiled kernels (Dynamo imports it when the `tilecraft` backend is looked up by name): swap its
    standard-library functions for interpreted ones; with no GPU, no compiled Triton kernel can run anyway.
    The process's environment is left as it was."""
    import torch

    if _os.environ.get("TRITON_INTERPRET") is not None or torch.cuda.is_available():
        return
    if "triton" not in _sys.modules:
        _os.environ["TRITON_INTERPRET"] = "1"
        try:
            import triton.language  # noqa: F401
            try:  # Triton 3.6 imports gluon lazily on the first launch, and gluon checks the interpreter is on
                import triton.experimental.gluon  # noqa: F401
            except ImportError:
                pass
        finally:
            del _os.environ["TRITON_INTERPRET"]
        return
    try:  # imported now, while the standard library is still the compiled form gluon checks for
        import triton.experimental.gluon  # noqa: F401
    except ImportError:
        pass
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for name, mod in list(_sys.modules.items()):
        if mod is None or not (name == "triton.language" or name.startswith("triton.language.")):
            continue
        for attr, obj in list(vars(mod).items()):
            if isinstance(obj, JITFunction) and obj.fn.__module__.startswith("triton.language"):
                setattr(mod, attr, InterpretedFunction(obj.fn))


_interpreted_triton()

from .compiler import CompiledModel, Options, compile, explain  # noqa: E402
from .quant import quantize, quantize_  # noqa: E402  (also registers the quantized-linear ops)

__version__ = "0.1.0"
__all__ = ["compile", "explain", "quantize", "quantize_", "Options", "CompiledModel", "__version__"]
