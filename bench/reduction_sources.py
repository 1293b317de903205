"""The generated reduction kernels of a fixed set of graphs and shapes: dump their sources, or run them.

    python bench/reduction_sources.py OUT_DIR        # write each kernel's source and default config
    python bench/reduction_sources.py --check cuda   # run every case on the device, compare with torch

Dumping builds the kernels from IR graphs without launching them (fast anywhere): run it before and after a
change to the reduction template and `diff -r` the two folders to see that every kernel keeps its math and
tiling. --check launches them (on "cpu" through Triton's interpreter, small shapes only) and compares each
output with the graph's torch reference at the dtype's tolerance.
"""
from __future__ import annotations

import json
import os
import sys

import torch

from tilecraft.compiler.api import Options
from tilecraft.compiler.runtime import build_kernel_program
from tilecraft.ir import Graph, TensorType, interpret
from tilecraft.passes import default_passes, run_passes
from tilecraft.testing import assert_close, randn


def graph(shape, dtype, build, device="cuda"):
    g = Graph()
    x = g.add_input(TensorType(shape, dtype, None, device), "x")
    w = g.add_input(TensorType(shape[-1:], dtype, None, device), "w")
    outs = build(g, x, w)
    g.outputs = list(outs)
    return g


def out(n):
    return [n.out]


CASES = {
    "softmax": lambda g, x, w: out(g.add("softmax", [x], {"dim": -1})),
    "softmax_dim0": lambda g, x, w: out(g.add("softmax", [x], {"dim": 0})),
    "log_softmax": lambda g, x, w: out(g.add("log_softmax", [x], {"dim": -1})),
    "softmax_prologue": lambda g, x, w: out(g.add("softmax", [g.add("mul", [x, 0.5]).out], {"dim": -1})),
    "layer_norm": lambda g, x, w: out(g.add("layer_norm", [x, w, w], {"normalized_shape": [x.type.shape[-1]],
                                                                      "eps": 1e-5})),
    "layer_norm_stats": lambda g, x, w: g.add("layer_norm", [x, None, None], {"normalized_shape": [x.type.shape[-1]],
                                                                              "eps": 1e-6}).outputs,
    "sum": lambda g, x, w: out(g.add("sum", [x], {"dim": [-1]})),
    "sum_dim0": lambda g, x, w: out(g.add("sum", [x], {"dim": [0], "keepdim": True})),
    "mean": lambda g, x, w: out(g.add("mean", [x], {"dim": [-1], "keepdim": True})),
    "var": lambda g, x, w: out(g.add("var", [x], {"dim": [-1], "correction": 1})),
    "var0": lambda g, x, w: out(g.add("var", [x], {"dim": [0], "correction": 0})),
    "amax": lambda g, x, w: out(g.add("amax", [x], {"dim": [-1]})),
    "amin": lambda g, x, w: out(g.add("amin", [x], {"dim": [0]})),
    "argmax": lambda g, x, w: out(g.add("argmax", [x], {"dim": -1})),
    "argmin_all": lambda g, x, w: out(g.add("argmin", [x], {"dim": None})),
    "max_dim": lambda g, x, w: g.add("max_dim", [x], {"dim": 0}).outputs,
    "min_dim": lambda g, x, w: g.add("min_dim", [x], {"dim": -1, "keepdim": True}).outputs,
    "any": lambda g, x, w: out(g.add("any", [g.add("gt", [x, 0.0]).out], {"dim": [-1]})),
    "all": lambda g, x, w: out(g.add("all", [g.add("gt", [x, 0.0]).out], {"dim": [0]})),
    "rmsnorm": lambda g, x, w: out(g.add("mul", [g.add("mul", [x, g.add("rsqrt", [g.add("add", [g.add(
        "mean", [g.add("mul", [x, x]).out], {"dim": [-1], "keepdim": True}).out, 1e-6]).out]).out]).out, w])),
    "softmax_as_ops": lambda g, x, w: (lambda e: out(g.add("div", [e, g.add("sum", [e], {"dim": [-1], "keepdim": True})
                                                                   .out])))(g.add("exp", [g.add("sub", [x, g.add(
                                                                       "amax", [x], {"dim": [-1], "keepdim": True})
                                                                       .out]).out]).out),
    "sum_int": lambda g, x, w: out(g.add("sum", [g.add("cast", [x], {"dtype": torch.int32}).out], {"dim": [-1]})),
    "prod": lambda g, x, w: out(g.add("prod", [x], {"dim": -1})),
    "prod_dim0": lambda g, x, w: out(g.add("prod", [x], {"dim": 0, "keepdim": True})),
}
SHAPES = [(4, 37), (64, 1024), (8, 8192), (3, 5, 7)]
DTYPES = [torch.float32, torch.bfloat16]


def main(dest: str) -> None:
    os.makedirs(dest, exist_ok=True)
    for name, build in CASES.items():
        for shape in SHAPES:
            for dtype in DTYPES:
                tag = f"{name}_{'x'.join(map(str, shape))}_{str(dtype).split('.')[-1]}"
                g = run_passes(graph(shape, dtype, build), default_passes(Options()))
                prog = build_kernel_program(g, Options())
                text = []
                for k in prog.kernels:
                    text.append(f"# {k.name} template={k.template} config={json.dumps(k.default_config())}\n")
                    text.append(k.source)
                text.append(f"# torch steps: {[s.node.op for s in prog.steps if hasattr(s, 'node')]}\n")
                with open(os.path.join(dest, tag + ".py"), "w") as f:
                    f.write("".join(text))
    print(f"wrote {len(CASES) * len(SHAPES) * len(DTYPES)} files to {dest}")


def check(device: str) -> int:
    """Run every case on `device` against the torch reference; print one line per case, return the failures."""
    shapes = SHAPES if device != "cpu" else [s for s in SHAPES if s[0] * s[-1] < 1000]
    failed = 0
    for name, build in CASES.items():
        for shape in shapes:
            for dtype in DTYPES:
                g = run_passes(graph(shape, dtype, build, device), default_passes(Options()))
                prog = build_kernel_program(g, Options())
                xs = [randn(*v.type.shape, dtype=dtype, seed=1).to(device) for v in g.inputs]
                try:
                    assert_close(prog(*xs), interpret(g, xs), scale=1.0 if dtype == torch.float32 else 2.0)
                    verdict = "ok"
                except AssertionError as e:
                    failed, verdict = failed + 1, f"FAILED {str(e).splitlines()[0]}"
                torch_steps = [s.node.op for s in prog.steps if hasattr(s, "node")]
                print(f"{name:18s} {'x'.join(map(str, shape)):9s} {str(dtype)[6:]:9s} kernels={len(prog.kernels)} "
                      f"torch={torch_steps} {verdict}")
    print(f"{failed} failed")
    return failed


if __name__ == "__main__":
    if sys.argv[1:2] == ["--check"]:
        sys.exit(1 if check(sys.argv[2] if len(sys.argv) > 2 else "cuda") else 0)
    main(sys.argv[1] if len(sys.argv) > 1 else "reduction_sources")
