"""Triton code generation: one kernel per fused group, from templates; the on-disk kernel cache."""
from .emit import Unsupported
from .kernel import ArgSpec, Kernel, cache_dir, load_source


def build_kernel(group, outputs, name: str, options=None):
    """Generate the kernel for a fused group; returns (Kernel, its argument values in order)."""
    from .matmul import matmul_kernel
    from .pointwise import pointwise_kernel
    from .reduction import reduction_kernel

    if group.kind == "matmul":
        return matmul_kernel(group, outputs, name, options)
    make = {"pointwise": pointwise_kernel, "reduction": reduction_kernel}.get(group.kind)
    if make is None:
        raise Unsupported(f"no template for {group.kind} groups")
    return make(group, outputs, name)


__all__ = ["Kernel", "ArgSpec", "build_kernel", "Unsupported", "cache_dir", "load_source"]
