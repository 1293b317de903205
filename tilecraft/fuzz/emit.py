"""Emit an IR graph as a standalone, readable PyTorch program, and load such a program back.

The program is an `nn.Module` whose forward uses plain torch calls (one line per IR node) plus a
`make_inputs(seed, scale, positive, device)` recipe, so a failing case reproduces with torch alone.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
from types import ModuleType

import torch

from ..ir import Graph, Node, Value

UNARY_TORCH = {"neg", "abs", "exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "rsqrt", "sin", "cos", "tanh",
               "sigmoid", "erf", "relu", "floor", "ceil", "sign", "reciprocal", "logical_not", "isnan",
               "bitwise_not"}
BINARY_TORCH = {"add", "sub", "mul", "div", "maximum", "minimum", "pow", "remainder", "eq", "ne", "lt", "le", "gt",
                "ge", "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor"}


class EmitError(ValueError):
    """The graph has an op this emitter cannot write as torch code."""


def dtype_expr(d: torch.dtype) -> str:
    return str(d)  # "torch.float32"


def _lit(v) -> str:
    if isinstance(v, torch.dtype):
        return dtype_expr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else f"float('{v}')"
    return repr(v)


def _slice_expr(x: str, rank: int, dim: int, start, end, step) -> str:
    dim %= rank
    s = f"{'' if start in (None, 0) else start}:{'' if end is None else end}" + ("" if step in (None, 1) else f":{step}")
    return f"{x}[{', '.join([':'] * dim + [s])}]"


def emit_node(node: Node, a: list[str]) -> str:
    """The torch expression that computes `node` from its input expressions `a`."""
    op, at = node.op, node.attrs
    x = a[0] if a else ""
    if op in UNARY_TORCH:
        return f"torch.{op}({x})"
    if op in BINARY_TORCH:
        return f"torch.{op}({a[0]}, {a[1]})"
    simple = {
        "silu": lambda: f"F.silu({x})",
        "gelu": lambda: f"F.gelu({x}, approximate={at.get('approximate', 'none')!r})",
        "leaky_relu": lambda: f"F.leaky_relu({x}, {at.get('negative_slope', 0.01)!r})",
        "clamp": lambda: f"torch.clamp({x}, min={at.get('min')!r}, max={at.get('max')!r})",
        "pow_scalar": lambda: f"torch.pow({x}, {at['exponent']!r})",
        "cast": lambda: f"{x}.to({dtype_expr(at['dtype'])})",
        "copy": lambda: f"{x}.clone()",
        "where": lambda: f"torch.where({a[0]}, {a[1]}, {a[2]})",
        "sum": lambda: f"torch.sum({x}, dim={_lit(at.get('dim'))}, keepdim={at.get('keepdim', False)})",
        "mean": lambda: f"torch.mean({x}, dim={_lit(at.get('dim'))}, keepdim={at.get('keepdim', False)})",
        "amax": lambda: f"torch.amax({x}, dim={_lit(at.get('dim'))}, keepdim={at.get('keepdim', False)})",
        "amin": lambda: f"torch.amin({x}, dim={_lit(at.get('dim'))}, keepdim={at.get('keepdim', False)})",
        "var": lambda: f"torch.var({x}, dim={_lit(at.get('dim'))}, correction={at.get('correction', 1)}, "
                       f"keepdim={at.get('keepdim', False)})",
        "var_mean": lambda: f"torch.var_mean({x}, dim={_lit(at.get('dim'))}, correction={at.get('correction', 1)}, "
                            f"keepdim={at.get('keepdim', False)})",
        "prod": lambda: f"torch.prod({x}, dim={at['dim']}, keepdim={at.get('keepdim', False)})",
        "softmax": lambda: f"torch.softmax({x}, dim={at['dim']})",
        "log_softmax": lambda: f"torch.log_softmax({x}, dim={at['dim']})",
        "cumsum": lambda: f"torch.cumsum({x}, dim={at['dim']})",
        "layer_norm": lambda: f"torch.native_layer_norm({x}, {_lit(at['normalized_shape'])}, {a[1]}, {a[2]}, "
                              f"{at.get('eps', 1e-5)!r})",
        "mm": lambda: f"torch.mm({a[0]}, {a[1]})",
        "bmm": lambda: f"torch.bmm({a[0]}, {a[1]})",
        "addmm": lambda: f"torch.addmm({a[0]}, {a[1]}, {a[2]}" + (
            "" if (at.get("beta", 1), at.get("alpha", 1)) == (1, 1)
            else f", beta={at.get('beta', 1)!r}, alpha={at.get('alpha', 1)!r}") + ")",
        "view": lambda: f"{x}.reshape({_lit(at['size'])})",
        "permute": lambda: f"{x}.permute({_lit(at['dims'])})",
        "expand": lambda: f"{x}.expand({_lit(at['size'])})",
        "slice": lambda: _slice_expr(x, node.inputs[0].type.rank, at.get("dim", 0), at.get("start"), at.get("end"),
                                     at.get("step", 1)),
        "select": lambda: f"{x}.select({at['dim']}, {at['index']})",
        "unsqueeze": lambda: f"{x}.unsqueeze({at['dim']})",
        "squeeze": lambda: f"{x}.squeeze({_lit(at['dim'])})" if at.get("dim") is not None else f"{x}.squeeze()",
        "cat": lambda: f"torch.cat([{', '.join(a)}], dim={at.get('dim', 0)})",
        "flip": lambda: f"torch.flip({x}, {_lit(at['dims'])})",
        "tril": lambda: f"torch.tril({x}, {at.get('diagonal', 0)})",
        "triu": lambda: f"torch.triu({x}, {at.get('diagonal', 0)})",
        "constant_pad_nd": lambda: f"F.pad({x}, {_lit(at['pad'])}, value={at.get('value', 0)!r})",
        "arange": lambda: f"torch.arange({at.get('start', 0)!r}, {at['end']!r}, {at.get('step', 1)!r}, "
                          f"dtype={_lit(at.get('dtype') or torch.int64)}, device=x0.device)",
        "sdpa": lambda: f"F.scaled_dot_product_attention({a[0]}, {a[1]}, {a[2]}"
                        + (f", attn_mask={a[3]}" if len(a) > 3 else "")
                        + f", is_causal={at.get('is_causal', False)}, scale={at.get('scale')!r})",
    }
    f = simple.get(op)
    if f is None:
        raise EmitError(f"no torch emitter for IR op '{op}'")
    return f()


def build_inputs(types, seed=0, scale=1.0, positive=False, device="cpu"):
    """Seeded inputs for [(shape, dtype, layout)]: normal(0, scale) drawn in float64 on the CPU (|x| * scale + 0.1
    when positive), then cast; bools are x > 0, integers round(4x). layout None is contiguous, ("perm", order)
    is a permuted tensor (dim order[0] outermost in memory), ("step", k) every k-th element of a k-times
    longer last dim. Built on the CPU, moved to `device` as a whole, then viewed, so strides are the same there."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype, *layout in types:
        layout = layout[0] if layout else None
        full = list(shape)
        if layout and layout[0] == "perm":
            full = [shape[d] for d in layout[1]]
        elif layout and layout[0] == "step":
            full[-1] *= layout[1]
        t = torch.randn(full, generator=g, dtype=torch.float64)
        if dtype == torch.bool:
            t = t > 0
        else:
            t = t * scale
            if positive:
                t = t.abs() + 0.1
            if not dtype.is_floating_point:
                t = (t * 4).round()
        t = t.to(dtype).to(device)
        if layout and layout[0] == "perm":
            t = t.permute([layout[1].index(d) for d in range(len(shape))])
        elif layout and layout[0] == "step":
            t = t[..., ::layout[1]]
        out.append(t)
    return out


def input_layout(t) -> tuple | None:
    """The build_inputs layout that gives a TensorType's strides (None: contiguous or anything else)."""
    from ..ir.types import contiguous_strides

    if not t.rank or tuple(t.strides) == tuple(contiguous_strides(t.shape)):
        return None
    order = sorted(range(t.rank), key=lambda d: -t.strides[d])
    if tuple(contiguous_strides([t.shape[d] for d in order])) == tuple(t.strides[d] for d in order):
        return ("perm", order)
    k = t.strides[-1]
    if k > 1 and tuple(t.strides) == tuple(contiguous_strides(t.shape[:-1] + (t.shape[-1] * k,))[:-1]) + (k,):
        return ("step", k)
    return None


INPUTS_RECIPE = inspect.getsource(build_inputs) + '''

def make_inputs(seed=0, scale=1.0, positive=False, device="cpu"):
    return build_inputs(INPUT_TYPES, seed, scale, positive, device)
'''


def emit_source(graph: Graph, header: str = "", class_name: str = "FuzzModel") -> str:
    """Python source of an nn.Module computing `graph` with plain torch calls, plus its input recipe."""
    names: dict[int, str] = {}
    args = []
    for i, v in enumerate(graph.inputs):
        names[id(v)] = f"x{i}"
        args.append(f"x{i}")
    body = []
    k = 0
    for node in graph.nodes:
        exprs = []
        for v in node.inputs:
            if isinstance(v, Value):
                if id(v) not in names:
                    raise EmitError(f"node {node.op} uses %{v.name} before it is defined")
                exprs.append(names[id(v)])
            else:
                exprs.append(_lit(v))
        outs = []
        for _ in node.outputs:
            k += 1
            outs.append(f"v{k}")
        for o, n in zip(node.outputs, outs):
            names[id(o)] = n
        lhs = ", ".join(outs) if len(outs) > 1 else outs[0]
        body.append(f"        {lhs} = {emit_node(node, exprs)}  # {node.op}: {node.outputs[0].type}")
    rets = [names[id(v)] if isinstance(v, Value) else _lit(v) for v in graph.outputs]
    body.append(f"        return ({', '.join(rets)},)")
    types = ",\n    ".join(f"({tuple(v.type.shape)!r}, {dtype_expr(v.type.dtype)}"
                           + (f", {input_layout(v.type)!r})" if input_layout(v.type) else ")") for v in graph.inputs)
    lines = [f'"""{header or "a tilecraft.fuzz model"}\n\nStandalone: needs only torch. '
             f'{len(graph.nodes)} ops, {len(graph.inputs)} inputs."""',
             "import torch",
             "import torch.nn.functional as F",
             "",
             f"INPUT_TYPES = [\n    {types},\n]" if graph.inputs else "INPUT_TYPES = []",
             "",
             "",
             f"class {class_name}(torch.nn.Module):",
             f"    def forward(self{''.join(', ' + a for a in args)}):",
             *body,
             "",
             INPUTS_RECIPE.rstrip(),
             ""]
    return "\n".join(lines)


def load_source(source: str, directory: str | None = None) -> ModuleType:
    """Import program source as a module from a real file (so Dynamo and Triton can read its lines)."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:16]
    directory = directory or os.path.join(tempfile.gettempdir(), "tilecraft_fuzz_src")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"fuzz_{digest}.py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    return load_file(path, f"tilecraft_fuzz_{digest}")


def load_file(path: str, module_name: str | None = None) -> ModuleType:
    """Import a program file (exec from file) and return the module; its model class is `FuzzModel`."""
    module_name = module_name or "tilecraft_fuzz_" + hashlib.sha1(path.encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(module_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_model(source: str) -> tuple[torch.nn.Module, ModuleType]:
    """(model instance, its module) from program source."""
    mod = load_source(source)
    return mod.FuzzModel().eval(), mod
