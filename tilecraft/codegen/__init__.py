"""Triton code generation: one kernel per fused group, from templates; the on-disk kernel cache."""
from .emit import Unsupported
from .kernel import ArgSpec, Kernel, cache_dir, load_source


def kernel_name(group) -> str:
    """The generated function's name, from the group's structure only: its template and fused ops in order
    (`pointwise_add_gelu`). Never an IR value name or the kernel's position in the program, so identical
    layers give byte-identical sources: one module, one Triton compile, one schedule key."""
    from ..ir.ops import REGISTRY

    ops = "_".join(dict.fromkeys(n.op for n in group.nodes if REGISTRY[n.op].category != "view"))
    return f"{group.kind}_{ops}"[:60].rstrip("_")


def build_kernel(group, outputs, name: str, options=None):
    """Generate the kernel for a fused group; returns (Kernel, its argument values in order). `name` names the
    kernel in reports (`Kernel.name`); the source only holds `kernel_name(group)`."""
    from .matmul import matmul_kernel
    from .pointwise import pointwise_kernel
    from .qmatmul import qmatmul_kernel
    from .reduction import reduction_kernel

    make = {"pointwise": pointwise_kernel, "reduction": reduction_kernel, "qmatmul": qmatmul_kernel,
            "matmul": lambda g, o, n: matmul_kernel(g, o, n, options)}.get(group.kind)
    if make is None:
        raise Unsupported(f"no template for {group.kind} groups")
    kernel, values = make(group, outputs, kernel_name(group))
    kernel.name = name
    return kernel, values


__all__ = ["Kernel", "ArgSpec", "build_kernel", "kernel_name", "Unsupported", "cache_dir", "load_source"]
