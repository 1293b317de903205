"""Import an ATen-level FX graph (from Dynamo + aot_autograd) into the tensor IR.

Every ATen op the registry knows becomes its IR op; any other op becomes a `torch_op` node that runs the
torch op as is, with one log line naming it. Inferred types are checked against the types FX recorded, so an
inference gap can never turn into a wrong result: such a node falls back to torch too.
"""
from __future__ import annotations

import logging
import operator
import re

import torch
import torch.fx

from ..ir import ATEN_TO_OP, REGISTRY, Graph, OpError, TensorType, Value
from ..ir.ops import Slot

log = logging.getLogger("tilecraft")


class CaptureError(RuntimeError):
    """The graph cannot be imported at all (the message names the node and its source)."""


def source_of(n: torch.fx.Node) -> str:
    """'file.py:12 `code`' of the user line a node came from, plus its ATen op."""
    target = str(n.target) if n.op == "call_function" else n.op
    trace = n.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s+(.*)', trace)
    if not frames:
        return target
    path, line, code = frames[-1]
    return f"{target} at {path.rsplit('/', 1)[-1]}:{line} `{code.strip()}`"


def _val_types(n: torch.fx.Node) -> list[TensorType] | None:
    val = n.meta.get("val")
    vals = val if isinstance(val, (list, tuple)) else [val]
    if not all(isinstance(v, torch.Tensor) for v in vals):
        return None
    return [TensorType.of(v) for v in vals]


def _split_args(overload, args, kwargs, pointwise: bool):
    """Schema-driven split of an ATen call into tensor inputs and attributes (named as in the schema)."""
    inputs, attrs = [], {}
    for i, a in enumerate(overload._schema.arguments):
        given = i < len(args) or a.name in kwargs
        v = args[i] if i < len(args) else kwargs.get(a.name)
        t = str(a.type)
        if t in ("Tensor", "Optional[Tensor]", "Tensor?"):
            inputs.append(v)
        elif t.startswith("List[") and "Tensor" in t or t in ("Tensor[]", "Tensor?[]"):
            inputs.extend(v)
        elif pointwise and a.name in ("self", "other"):
            inputs.append(v)
        elif given:
            attrs[a.name] = v
    return inputs, attrs


class Importer:
    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.graph = Graph()
        self.env: dict[torch.fx.Node, object] = {}
        self.fallbacks: list[str] = []

    def lookup(self, a):
        return torch.fx.node.map_arg(a, lambda n: self.env[n])

    def run(self) -> Graph:
        for n in self.gm.graph.nodes:
            try:
                self.visit(n)
            except (CaptureError, OpError) as e:
                raise CaptureError(f"cannot import {source_of(n)}: {e}") from e
        return self.graph

    def visit(self, n: torch.fx.Node):
        g = self.graph
        if n.op == "placeholder":
            types = _val_types(n)
            if types is None:
                raise CaptureError(f"graph input {n.name} is not a tensor ({type(n.meta.get('val')).__name__}); "
                                   "compile with dynamic=False")
            self.env[n] = g.add_input(types[0], n.name)
        elif n.op == "get_attr":
            value = getattr(self.gm, n.target)
            self.env[n] = g.add("constant", [], {"value": value}, name=n.name, source=n.target).out
        elif n.op == "call_function" and n.target is operator.getitem:
            base, idx = self.lookup(n.args)
            self.env[n] = base[idx]
        elif n.op == "call_function":
            self.env[n] = self.call(n)
        elif n.op == "output":
            outs = self.lookup(n.args[0])
            g.outputs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        else:
            raise CaptureError(f"unsupported FX node kind {n.op}")

    def call(self, n: torch.fx.Node):
        target, src = n.target, source_of(n)
        args, kwargs = self.lookup(n.args), self.lookup(n.kwargs)
        name = str(target).removeprefix("aten.")
        val_types = _val_types(n)
        op_name = ATEN_TO_OP.get(name) if isinstance(target, torch._ops.OpOverload) else None
        rewrite = REWRITES.get(name)
        if rewrite is not None:
            out = rewrite(self, n, args, kwargs, src)
            if out is not None:
                return out
        if op_name is not None and val_types is not None:
            opdef = REGISTRY[op_name]
            inputs, attrs = _split_args(target, args, kwargs, opdef.category == "pointwise")
            try:
                inferred = opdef.infer(inputs, attrs)
            except OpError:
                inferred = None
            if inferred is not None and [(t.shape, t.dtype) for t in inferred] == [
                    (t.shape, t.dtype) for t in val_types]:
                node = self.graph.add(op_name, inputs, attrs, out_types=inferred, name=n.name, source=src)
                return node.out if len(node.outputs) == 1 and not isinstance(n.meta.get("val"), (list, tuple)) \
                    else tuple(node.outputs)
            why = (f"type inference gave {[str(t) for t in inferred] if inferred else 'an error'}, "
                   f"torch gives {[str(t) for t in val_types]}")
        else:
            why = "no IR op for it" if op_name is None else "its output is not a tensor"
        return self.fallback(n, args, kwargs, src, why)

    def fallback(self, n, args, kwargs, src, why):
        """An op the IR cannot express: run it through torch, and say so once."""
        val_types = _val_types(n)
        if val_types is None:
            raise CaptureError(f"{why}, and its result is not a tensor")
        inputs: list[Value] = []

        def slot(v):
            if isinstance(v, Value):
                inputs.append(v)
                return Slot(len(inputs) - 1)
            if isinstance(v, (list, tuple)):
                return type(v)(slot(x) for x in v)
            return v

        a, kw = slot(args), {k: slot(v) for k, v in kwargs.items()}
        self.fallbacks.append(str(n.target))
        log.warning("tilecraft: %s runs through torch (%s)", src, why)
        node = self.graph.add("torch_op", inputs, {"target": n.target, "args": a, "kwargs": kw},
                              out_types=val_types, name=n.name, source=src)
        return node.out if not isinstance(n.meta.get("val"), (list, tuple)) else tuple(node.outputs)


# ------------------------------------------------------------------------------------------ canonicalizing
def _alpha(imp, n, args, kwargs, src):
    """add/sub with alpha != 1: scale the second operand first."""
    alpha = kwargs.get("alpha", 1)
    if alpha == 1 or not isinstance(args[1], Value):
        return None
    other = imp.graph.add("mul", [args[1], alpha], source=src).out
    op = "add" if str(n.target).startswith("aten.add") else "sub"
    return imp.graph.add(op, [args[0], other], name=n.name, source=src).out


def _to_copy(imp, n, args, kwargs, src):
    """_to_copy that only changes dtype is a cast; a device or layout change goes through torch. non_blocking
    (`x.to(dtype, non_blocking=True)`) changes no value: it used to reach the cast node's attributes, which its
    reference cannot take (ExecutionError whenever the cast ran through torch: float64, codegen off)."""
    x = args[0]
    extra = {k: v for k, v in kwargs.items() if k not in ("dtype", "memory_format", "non_blocking")
             and v is not None}
    if extra.get("pin_memory") is False:
        extra.pop("pin_memory")
    if "device" in extra and torch.device(extra["device"]).type == x.type.device:
        extra.pop("device")
    extra.pop("layout", None) if kwargs.get("layout") in (None, torch.strided) else None
    if extra:
        return imp.fallback(n, args, kwargs, src, f"_to_copy with {sorted(extra)}")
    dtype = kwargs.get("dtype")
    if dtype is None or dtype == x.type.dtype:
        return imp.graph.add("copy", [x], name=n.name, source=src).out
    return imp.graph.add("cast", [x], {"dtype": dtype}, name=n.name, source=src).out


def _split(imp, n, args, kwargs, src):
    """split / split_with_sizes / unbind become slices (selects), which fuse as index arithmetic."""
    x = args[0]
    name = str(n.target)
    dim = (args[2] if len(args) > 2 else kwargs.get("dim", 0)) if "unbind" not in name else (
        args[1] if len(args) > 1 else kwargs.get("dim", 0))
    dim %= max(x.type.rank, 1)
    if "unbind" in name:
        return tuple(imp.graph.add("select", [x], {"dim": dim, "index": i}, source=src).out
                     for i in range(x.type.shape[dim]))
    sizes = args[1]
    if isinstance(sizes, int):
        sizes = [min(sizes, x.type.shape[dim] - s) for s in range(0, x.type.shape[dim], sizes)]
    outs, start = [], 0
    for s in sizes:
        outs.append(imp.graph.add("slice", [x], {"dim": dim, "start": start, "end": start + s, "step": 1},
                                  source=src).out)
        start += s
    return tuple(outs)


def _sdpa(imp, n, args, kwargs, src):
    """The CUDA attention variants (flash, cuDNN, memory-efficient) → one `sdpa` node, when only the attention
    output is used (inference); dropout or a used logsumexp (training) keeps the ATen op."""
    a = {s.name: (args[i] if i < len(args) else kwargs.get(s.name, s.default_value))
         for i, s in enumerate(n.target._schema.arguments)}
    if a.get("dropout_p") or a.get("return_debug_mask") or any(
            u.target is not operator.getitem or (u.args[1] != 0 and u.users) for u in n.users):
        return None
    mask = a.get("attn_bias", a.get("attn_mask"))
    inputs = [a["query"], a["key"], a["value"]] + ([mask] if isinstance(mask, Value) else [])
    # the attention kernels lay their output out like the query (often [b, t, h, d] in memory): take FX's strides,
    # so the kernel that reads it is generated for that layout instead of copying it into a contiguous one
    val = n.meta.get("val")
    types = [TensorType.of(val[0])] if isinstance(val, (list, tuple)) and isinstance(val[0], torch.Tensor) else None
    variant = str(n.target).removeprefix("aten.").removesuffix(".default")
    out = imp.graph.add("sdpa", inputs, {"is_causal": bool(a.get("is_causal")), "scale": a.get("scale"),
                                         "variant": variant},
                        out_types=types[:1] if types else None, name=n.name, source=src).out
    return (out,) + (None,) * (len(n.meta["val"]) - 1)


def _clamp_tensor(imp, n, args, kwargs, src):
    """clamp(x, min_tensor, max_tensor) = minimum(maximum(x, min), max): pointwise ops that fuse (torch's own
    decomposition; the dtype promotes over all three, as maximum / minimum do)."""
    lo = args[1] if len(args) > 1 else kwargs.get("min")
    hi = args[2] if len(args) > 2 else kwargs.get("max")
    x, want = args[0], _val_types(n)
    if want is None or not isinstance(x, Value):
        return None
    if lo is not None:
        x = imp.graph.add("maximum", [x, lo], source=src).out
    if hi is not None:
        x = imp.graph.add("minimum", [x, hi], source=src).out
    if (x.type.shape, x.type.dtype) != (want[0].shape, want[0].dtype):
        raise CaptureError(f"clamp as maximum/minimum gives {x.type}, torch gives {want[0]}")
    return x if x is not args[0] else imp.graph.add("copy", [x], name=n.name, source=src).out


REWRITES = {"clamp.Tensor": _clamp_tensor, "add.Tensor": _alpha, "sub.Tensor": _alpha, "_to_copy.default": _to_copy,
            "split_with_sizes.default": _split, "split.Tensor": _split, "unbind.int": _split,
            **{f"_scaled_dot_product_{v}_attention.default": _sdpa for v in ("cudnn", "flash", "efficient")}}


def import_fx(gm: torch.fx.GraphModule) -> tuple[Graph, list[str]]:
    """Import an ATen FX graph; returns the IR graph and the list of ATen ops that fell back to torch."""
    imp = Importer(gm)
    graph = imp.run()
    return graph, imp.fallbacks
