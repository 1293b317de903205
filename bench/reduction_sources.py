"""Dump the generated reduction kernels (source, default config) for a fixed set of graphs and shapes.

Used to check that a change to the reduction template keeps every kernel's math and tiling: run it before and
after, then `diff -r` the two folders. Builds the kernels from IR graphs (no launch), so it is fast anywhere.
    python bench/reduction_sources.py OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys

import torch

from tilecraft.compiler.api import Options
from tilecraft.compiler.runtime import build_kernel_program
from tilecraft.ir import Graph, TensorType
from tilecraft.passes import default_passes, run_passes


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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reduction_sources")
