"""The op registry: one entry per IR op.

Each entry says what category the op is in, how its output types follow from its inputs, what it means (a
torch reference), which ATen overloads import to it, and what codegen can do with it: which kernel template
computes it and on which dtypes, the Triton expression of a pointwise op, and for a reduction the statistics
it accumulates over a row and how its outputs follow from them (`Reduce`). Fusion and the templates read only
these fields, so adding an op is adding one `op(...)` call below.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as PROMO
from torch._prims_common import elementwise_dtypes

from .node import Node, Value
from .types import TensorType, contiguous_strides

CATEGORIES = ("pointwise", "reduction", "matmul", "view", "data", "opaque")
# The kernel templates an op can be computed by ("view": index arithmetic inside whichever kernel reads it).
TEMPLATES = ("pointwise", "reduction", "matmul", "qmatmul", "view")
# The dtypes generated kernels compute in; a node with a value of another dtype runs through torch.
CODEGEN_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
                            torch.int8, torch.uint8, torch.bool})
FLOAT_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})
INDEX_DTYPES = frozenset({torch.int64, torch.int32})


class OpError(ValueError):
    """Raised when an op is applied to inputs it cannot take."""


@dataclass(frozen=True)
class Combine:
    """How one statistic folds a row, as lines of Triton (accumulator acc{k}_{name}, or acc{k} when name is
    empty; k numbers the group's reductions): `single` reduces a whole row held in registers,
    `init`/`step`/`finish` do it over RBLOCK-wide chunks (a [XBLOCK, RBLOCK] accumulator merged per chunk, then
    reduced along the row). Lines are formatted with {acc} (the accumulator's name), {v} (the masked element
    block), {identity} and {acc_t} (the accumulator's Triton dtype). `identity` fills masked-off lanes of a float
    row, `int_identity` of an integer or bool one; `results` are the row values it leaves; `helper` is Triton
    source the kernel module needs (a combine function for tl.reduce)."""

    name: str
    identity: str
    single: tuple[str, ...]
    init: tuple[str, ...]
    step: tuple[str, ...]
    finish: tuple[str, ...]
    int_identity: str = ""
    results: tuple[str, ...] = ("{acc}",)
    helper: str = ""


def fold(name: str, identity: str, int_identity: str, merge: str, row: str, helper: str = "") -> Combine:
    """An associative fold: merge(a, b) of two blocks element by element, row(a) of a block along its rows."""
    return Combine(name, identity, single=(f"{{acc}} = {row.format(a='{v}')}[:, None]",),
                   init=("{acc} = tl.full([XBLOCK, RBLOCK], {identity}, {acc_t})",),
                   step=(f"{{acc}} = {merge.format(a='{acc}', b='{v}')}",),
                   finish=(f"{{acc}} = {row.format(a='{acc}')}[:, None]",), int_identity=int_identity, helper=helper)


NEG_INF, POS_INF = '-float("inf")', 'float("inf")'
SUM = fold("sum", "0", "0", "{a} + {b}", "tl.sum({a}, 1)")
MAX = fold("max", NEG_INF, "0", "tl.maximum({a}, {b})", "tl.max({a}, 1)")
MIN = fold("min", POS_INF, "1", "tl.minimum({a}, {b})", "tl.min({a}, 1)")
PROD = fold("prod", "1", "1", "{a} * {b}", "tl.reduce({a}, 1, prod_combine)",
            helper="@triton.jit\ndef prod_combine(a, b):\n    return a * b\n")
# softmax's two statistics in one pass: the running max m and the sum of exp(x - m), rescaled when m grows
ONLINE_SOFTMAX = Combine(
    "online", NEG_INF, results=("{acc}", "{acc}_s"),
    single=("{acc} = tl.max({v}, 1)[:, None]", "{acc}_s = tl.sum(tl.where(mask, tl.exp({v} - {acc}), 0), 1)[:, None]"),
    init=("{acc} = tl.full([XBLOCK, RBLOCK], {identity}, {acc_t})", "{acc}_s = tl.zeros([XBLOCK, RBLOCK], tl.float32)"),
    step=("m_new = tl.maximum({acc}, {v})", f"m_safe = tl.where(m_new == {NEG_INF}, 0.0, m_new)",
          "{acc}_s = {acc}_s * tl.exp({acc} - m_safe) + tl.exp({v} - m_safe)", "{acc} = m_new"),
    finish=("{acc}_m = tl.max({acc}, 1)[:, None]", "{acc}_s = tl.sum({acc}_s * tl.exp({acc} - {acc}_m), 1)[:, None]",
            "{acc} = {acc}_m"))


def arg_combine(name: str, identity: str, red: str, cmp: str) -> Combine:
    """The row's extreme value and the first index holding it (torch's tie rule): red is tl.max or tl.min."""
    return Combine(
        name, identity, results=("{acc}_v", "{acc}_i"),
        single=(f"{{acc}}_v = {red}({{v}}, 1)[:, None]",
                f"{{acc}}_i = tl.arg{red[3:]}({{v}}, 1, tie_break_left=True)[:, None]"),
        init=("{acc}_v = tl.full([XBLOCK, RBLOCK], {identity}, {acc_t})",
              "{acc}_i = tl.zeros([XBLOCK, RBLOCK], tl.int32)"),
        step=(f"take = {{v}} {cmp} {{acc}}_v", "{acc}_i = tl.where(take, rindex, {acc}_i)",
              "{acc}_v = tl.where(take, {v}, {acc}_v)"),
        finish=(f"{{acc}}_v_r = {red}({{acc}}_v, 1)[:, None]",
                "{acc}_i = tl.min(tl.where({acc}_v == {acc}_v_r, {acc}_i, 2147483647), 1)[:, None]",
                "{acc}_v = {acc}_v_r"))


ARGMAX = arg_combine("", NEG_INF, "tl.max", ">")
ARGMIN = arg_combine("", POS_INF, "tl.min", "<")


@dataclass(frozen=True)
class Stat:
    """One statistic of a reduction: `combine` over the row of the element expression `of` (of {x}, the
    reduced input, and of earlier row values); its results are named `names`; `then` binds further row values
    computed from them, in order (e.g. the mean from the sum)."""

    combine: Combine
    names: tuple[str, ...]
    of: str = "{x}"
    then: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Reduce:
    """How the reduction template computes an op: its statistics, one pass over the row each (a combine may
    carry two, as online softmax does), then one expression per output. Expressions name the node's inputs by
    `inputs` ({x}: the reduced input at the element; the others at the element's trailing dims). An output
    that reads {x} is full-size (computed per element, after the statistics); the others are row values. An
    output given as a tuple is its first piece plus each further piece whose inputs are tensors (not None).
    Expressions may use {n} (the reduced extent) and what `params(attrs, n)` gives. `dims(attrs, rank)` is the
    reduced dims (default: the `dim` attribute, None meaning all)."""

    stats: tuple[Stat, ...]
    outputs: tuple[str | tuple[str, ...], ...]
    inputs: tuple[str, ...] = ("x",)
    params: Callable[[dict, int], dict] | None = None
    dims: Callable[[dict, int], tuple[int, ...]] | None = None


@dataclass
class OpDef:
    name: str
    category: str
    ref: Callable[..., Any]  # ref(*inputs, **attrs) -> Tensor | tuple of Tensors
    aten: tuple[str, ...] = ()  # ATen overloads that import to this op, e.g. "add.Tensor"
    infer_fn: Callable | None = None  # (inputs, attrs) -> list[TensorType]; None: run ref on meta tensors
    triton: Any = None  # pointwise: expression template over {0}, {1}, ... (or attrs -> template)
    promotion: str = "DEFAULT"  # pointwise dtype rule (torch's ELEMENTWISE_TYPE_PROMOTION_KIND) or "attr"
    num_outputs: int | Callable[[dict], int] = 1  # or attrs -> count (a quantized linear's `pair`)
    doc: str = ""
    meta: dict = field(default_factory=dict)
    # what codegen can do with it (read by fusion and the templates)
    template: str | None = None  # the kernel template that computes it (TEMPLATES); None: it runs through torch
    dtypes: frozenset = CODEGEN_DTYPES  # the dtypes of its tensor inputs that the template takes
    accepts: Callable[[Node], bool] | None = None  # a further condition on a node (index dtypes, sizes, ...)
    reduce: Reduce | None = None  # reductions: how the reduction template computes it
    dim_attr: str | None = None  # its `dim` attribute: "dims" (a list; None: all) or "dim" (one dim)

    def infer(self, inputs: list, attrs: dict) -> list[TensorType]:
        """Output types of this op applied to `inputs` (Values or scalars) with `attrs`. Memoized on the op,
        the input types and the plain-data arguments (see `_infer_key`): the importer, every pass and the
        verifier after each pass infer each node again, and identical layers repeat the same inferences."""
        key = _infer_key(self.name, inputs, attrs)
        hit = _INFERRED.get(key) if key is not None else None
        if hit is not None:
            return list(hit)
        out = self.infer_fn(self, inputs, attrs) if self.infer_fn is not None else infer_by_meta(self, inputs, attrs)
        if key is not None:
            if len(_INFERRED) >= 100_000:
                _INFERRED.clear()
            _INFERRED[key] = tuple(out)
        return out

    def outputs_for(self, attrs: dict) -> int:
        """How many outputs a node of this op with `attrs` has."""
        return self.num_outputs(attrs) if callable(self.num_outputs) else self.num_outputs

    def __call__(self, *inputs, **attrs):
        return self.ref(*inputs, **attrs)


REGISTRY: dict[str, OpDef] = {}
_INFERRED: dict[tuple, tuple] = {}  # OpDef.infer's memo: (op, input key, attrs key) -> output types


class _NoKey(Exception):
    """An argument `_plain` cannot key by value (a tensor, a callable, ...): that inference is not memoized."""


def _plain(x):
    """A hashable key equal only for arguments inference cannot tell apart: a Value by its type (inference sees
    nothing else of it), plain data by type and value (floats by repr: -0.0, nan)."""
    if isinstance(x, Value):
        return x.type
    if x is None or isinstance(x, (bool, int, str, torch.dtype, torch.device, torch.memory_format, torch.layout)):
        return (type(x), x)
    if isinstance(x, float):
        return (float, repr(x))
    if isinstance(x, (list, tuple)):
        return (type(x), tuple(_plain(y) for y in x))
    if isinstance(x, dict):
        return (dict, tuple((k, _plain(v)) for k, v in sorted(x.items())))
    raise _NoKey


def _infer_key(name: str, inputs, attrs) -> tuple | None:
    try:
        return (name, _plain(inputs), _plain(attrs))
    except (_NoKey, TypeError):  # TypeError: attr names that do not sort
        return None
ATEN_TO_OP: dict[str, str] = {}


def op(name: str, category: str, ref: Callable, aten=(), **kw) -> OpDef:
    assert category in CATEGORIES, category
    assert kw.get("template") in TEMPLATES + (None,), kw.get("template")
    assert name not in REGISTRY, f"op {name} registered twice"
    d = OpDef(name, category, ref, tuple(aten), **kw)
    REGISTRY[name] = d
    for a in d.aten:
        ATEN_TO_OP[a] = name
    return d


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise OpError(f"unknown IR op '{name}'") from None


# ----------------------------------------------------------------------------------------------- inference
def _type_of(v):
    return v.type if isinstance(v, Value) else None


def _meta(v):
    t = _type_of(v)
    return t.meta() if t is not None else v


def _device(inputs) -> str:
    for v in inputs:
        t = _type_of(v)
        if t is not None:
            return t.device
    return "cpu"


def _as_types(out, device) -> list[TensorType]:
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [TensorType(tuple(o.shape), o.dtype, tuple(o.stride()), device) for o in outs]


def infer_by_meta(opdef: OpDef, inputs, attrs) -> list[TensorType]:
    """Shape/dtype inference by running the torch reference on meta tensors (exactly torch's rules)."""
    device = _device(inputs)
    if attrs.get("device") is not None:  # creation ops: build on meta, report the real device
        device = torch.device(attrs["device"]).type
        attrs = {**attrs, "device": "meta"}
    try:
        out = opdef.ref(*[_meta(v) for v in inputs], **attrs)
    except Exception as e:  # noqa: BLE001 - re-raised with the op's name
        raise OpError(f"{opdef.name}: cannot infer output type: {e}") from e
    return _as_types(out, device)


def broadcast_shapes(*shapes) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise OpError(f"shapes {list(shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def infer_pointwise(opdef: OpDef, inputs, attrs) -> list[TensorType]:
    types = [_type_of(v) for v in inputs if _type_of(v) is not None]
    if not types:
        raise OpError(f"{opdef.name}: needs at least one tensor input")
    shape = broadcast_shapes(*[t.shape for t in types])
    if opdef.promotion == "attr":
        dtype = attrs["dtype"]
    else:
        args = [_meta(v) for v in inputs if v is not None]
        _, dtype = elementwise_dtypes(*args, type_promotion_kind=getattr(PROMO, opdef.promotion))
    return [TensorType(shape, dtype, None, _device(inputs))]


def norm_dims(dims, rank: int) -> list[int]:
    """Reduction dims as a sorted list of non-negative ints (None or [] mean all dims)."""
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    bad = [d for d in dims if not -max(rank, 1) <= d < max(rank, 1)]
    if bad:
        raise OpError(f"reduction dim {bad[0]} is out of range for a rank-{rank} tensor")
    out = sorted({d % rank if rank else 0 for d in dims})
    return out


def infer_reduction(opdef: OpDef, inputs, attrs) -> list[TensorType]:
    t = _type_of(inputs[0])
    dims = norm_dims(attrs.get("dim"), t.rank)
    keep = attrs.get("keepdim", False)
    shape = tuple(1 if i in dims else s for i, s in enumerate(t.shape)) if keep else tuple(
        s for i, s in enumerate(t.shape) if i not in dims)
    rule = opdef.meta.get("dtype", "same")
    if attrs.get("dtype") is not None:
        dtype = attrs["dtype"]
    elif rule == "int64" or (rule == "sum" and not t.dtype.is_floating_point):
        dtype = torch.int64
    elif rule == "bool":
        dtype = torch.bool
    else:
        dtype = t.dtype
    outs = [TensorType(shape, dtype, None, t.device)]
    if opdef.num_outputs == 2:  # (values, indices) or (var, mean)
        outs.append(TensorType(shape, torch.int64 if rule != "same2" else dtype, None, t.device))
    return outs


def infer_softmax(opdef: OpDef, inputs, attrs) -> list[TensorType]:
    t = _type_of(inputs[0])
    dtype = torch.float32 if attrs.get("half_to_float") else t.dtype
    return [TensorType(t.shape, dtype, None, t.device)]


def infer_matmul(opdef: OpDef, inputs, attrs) -> list[TensorType]:
    ts = [_type_of(v) for v in inputs]
    if opdef.name == "addmm":
        bias, a, b = ts
    else:
        a, b = ts[0], ts[1]
    if a.dtype != b.dtype:
        raise OpError(f"{opdef.name}: operand dtypes differ ({a.dtype} vs {b.dtype})")
    if opdef.name == "bmm":
        if a.rank != 3 or b.rank != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
            raise OpError(f"bmm: shapes {a.shape} and {b.shape} do not multiply")
        shape = (a.shape[0], a.shape[1], b.shape[2])
    else:
        if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[0]:
            raise OpError(f"{opdef.name}: shapes {a.shape} and {b.shape} do not multiply")
        shape = (a.shape[0], b.shape[1])
        if opdef.name == "addmm":
            broadcast_shapes(bias.shape, shape)
            if bias.dtype != a.dtype:
                raise OpError(f"addmm: bias dtype {bias.dtype} differs from operands' {a.dtype}")
    return [TensorType(shape, a.dtype, None, a.device)]


def _views_by_meta(opdef, inputs, attrs):
    return infer_by_meta(opdef, inputs, attrs)


# ----------------------------------------------------------------------------------------------- pointwise
def pointwise(name, ref, expr, aten=(), promotion="DEFAULT", **kw):
    return op(name, "pointwise", ref, aten, infer_fn=infer_pointwise, triton=expr, promotion=promotion,
              template="pointwise", **kw)


def _gelu(x, approximate="none"):
    return torch.nn.functional.gelu(x, approximate=approximate)


def _pow_expr(attrs):
    e = attrs.get("exponent")
    return POW_EXPRS.get(e, "tl.exp2({e} * tl.log2({0}))".replace("{e}", repr(e)))


POW_EXPRS = {2: "{0} * {0}", 2.0: "{0} * {0}", 3: "{0} * {0} * {0}", 3.0: "{0} * {0} * {0}",
             0.5: "tl.sqrt({0})", -0.5: "tl.rsqrt({0})", -1: "1.0 / {0}", -1.0: "1.0 / {0}", 1: "{0}", 1.0: "{0}"}
TANH = "(2.0 * tl.sigmoid(2.0 * {0}) - 1.0)"

pointwise("neg", torch.neg, "-{0}", ["neg.default"])
pointwise("abs", torch.abs, "tl.abs({0})", ["abs.default"])
pointwise("exp", torch.exp, "tl.exp({0})", ["exp.default"], "INT_TO_FLOAT")
pointwise("exp2", torch.exp2, "tl.exp2({0})", ["exp2.default"], "INT_TO_FLOAT")
# expm1 / log1p without libdevice (unavailable to the interpreter): near 0, where exp(x) - 1 and log(1 + x)
# cancel, short polynomials keep float32 relative accuracy (Taylor for expm1; log1p = 2 atanh(x / (2 + x))).
EXPM1_POLY = "{0} * (1.0 + {0} * (0.5 + {0} * (0.16666666666666666 + {0} * (0.041666666666666664 + {0} * (" \
             "0.008333333333333333 + {0} * (0.001388888888888889 + {0} * (0.0001984126984126984 + " \
             "{0} * 2.48015873015873e-05)))))))"
pointwise("expm1", torch.expm1, "tl.where(tl.abs({0}) < 0.5, " + EXPM1_POLY + ", tl.exp({0}) - 1.0)",
          ["expm1.default"], "INT_TO_FLOAT")
pointwise("log", torch.log, "tl.log({0})", ["log.default"], "INT_TO_FLOAT")
pointwise("log2", torch.log2, "tl.log2({0})", ["log2.default"], "INT_TO_FLOAT")
LOG1P_S = "({0} / (2.0 + {0}))"
pointwise("log1p", torch.log1p, "tl.where(tl.abs({0}) < 0.5, 2.0 * S * (1.0 + S * S * (0.3333333333333333 + S * S * ("
          "0.2 + S * S * (0.14285714285714285 + S * S * (0.1111111111111111 + S * S * 0.09090909090909091))))), "
          "tl.log(1.0 + {0}))".replace("S", LOG1P_S), ["log1p.default"], "INT_TO_FLOAT")
pointwise("sqrt", torch.sqrt, "tl.sqrt({0})", ["sqrt.default"], "INT_TO_FLOAT")
pointwise("rsqrt", torch.rsqrt, "tl.rsqrt({0})", ["rsqrt.default"], "INT_TO_FLOAT")
pointwise("sin", torch.sin, "tl.sin({0})", ["sin.default"], "INT_TO_FLOAT")
pointwise("cos", torch.cos, "tl.cos({0})", ["cos.default"], "INT_TO_FLOAT")
pointwise("tanh", torch.tanh, TANH, ["tanh.default"], "INT_TO_FLOAT")
pointwise("sigmoid", torch.sigmoid, "tl.sigmoid({0})", ["sigmoid.default"], "INT_TO_FLOAT")
pointwise("erf", torch.erf, "tl.erf({0})", ["erf.default"], "INT_TO_FLOAT")
pointwise("relu", torch.relu, "tl.where({0} > 0, {0}, 0)", ["relu.default"])
pointwise("silu", torch.nn.functional.silu, "{0} * tl.sigmoid({0})", ["silu.default"], "INT_TO_FLOAT")
pointwise("gelu", _gelu, lambda attrs: (
    "0.5 * {0} * (1.0 + " + TANH.replace("{0}", "(0.7978845608028654 * ({0} + 0.044715 * {0} * {0} * {0}))") + ")"
    if attrs.get("approximate", "none") == "tanh" else "0.5 * {0} * (1.0 + tl.erf({0} * 0.7071067811865476))"),
    ["gelu.default"])
pointwise("reciprocal", torch.reciprocal, "1.0 / {0}", ["reciprocal.default"], "INT_TO_FLOAT")
pointwise("floor", torch.floor, "tl.floor({0})", ["floor.default"])
pointwise("ceil", torch.ceil, "tl.ceil({0})", ["ceil.default"])
pointwise("sign", torch.sign, "tl.where({0} > 0, 1, tl.where({0} < 0, -1, 0))", ["sign.default"])
pointwise("logical_not", torch.logical_not, "{0} == 0", ["logical_not.default"], "ALWAYS_BOOL")
pointwise("bitwise_not", torch.bitwise_not, "~{0}", ["bitwise_not.default"])
pointwise("isnan", torch.isnan, "{0} != {0}", ["isnan.default"], "ALWAYS_BOOL")
pointwise("copy", lambda x, memory_format=None: x.clone(), "{0}", ["clone.default"])
pointwise("cast", lambda x, dtype: x.to(dtype), "{0}", ["_to_copy.default", "prims.convert_element_type.default"],
          promotion="attr", doc="dtype conversion; codegen casts at the use")
pointwise("pow_scalar", lambda x, exponent: torch.pow(x, exponent), _pow_expr, ["pow.Tensor_Scalar"],
          doc="x ** exponent with a constant exponent")
pointwise("clamp", lambda x, min=None, max=None: torch.clamp(x, min, max), lambda attrs: (
    ("tl.maximum({0}, %r)" % attrs["min"] if attrs.get("min") is not None else "{0}")
    if attrs.get("max") is None else
    ("tl.minimum(tl.maximum({0}, %r), %r)" % (attrs["min"], attrs["max"]) if attrs.get("min") is not None
     else "tl.minimum({0}, %r)" % attrs["max"])), ["clamp.default"])
pointwise("leaky_relu", lambda x, negative_slope=0.01: torch.nn.functional.leaky_relu(x, negative_slope),
          lambda attrs: "tl.where({0} > 0, {0}, {0} * %r)" % attrs.get("negative_slope", 0.01),
          ["leaky_relu.default"])

pointwise("add", torch.add, "{0} + {1}", ["add.Tensor", "add.Scalar"])
pointwise("sub", torch.sub, "{0} - {1}", ["sub.Tensor", "sub.Scalar"])
pointwise("mul", torch.mul, "{0} * {1}", ["mul.Tensor", "mul.Scalar"])
pointwise("div", torch.div, "{0} / {1}", ["div.Tensor", "div.Scalar"], "INT_TO_FLOAT")
pointwise("pow", torch.pow, "tl.exp2({1} * tl.log2({0}))", ["pow.Tensor_Tensor"], "BOOL_TO_LONG")
pointwise("maximum", torch.maximum, "tl.maximum({0}, {1})", ["maximum.default"])
pointwise("minimum", torch.minimum, "tl.minimum({0}, {1})", ["minimum.default"])
pointwise("remainder", torch.remainder, "{0} - tl.floor({0} / {1}) * {1}", ["remainder.Tensor", "remainder.Scalar"])
for _n, _sym in [("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")]:
    pointwise(_n, getattr(torch, _n), "{0} %s {1}" % _sym, [f"{_n}.Tensor", f"{_n}.Scalar"], "ALWAYS_BOOL")
for _n, _sym in [("logical_and", "&"), ("logical_or", "|"), ("logical_xor", "^")]:
    # int8 operands: Triton's interpreter cannot combine a scalar (broadcast) int1 with a block of them
    pointwise(_n, getattr(torch, _n), "(({0} != 0).to(tl.int8) %s ({1} != 0).to(tl.int8)) != 0" % _sym,
              [f"{_n}.default"], "ALWAYS_BOOL")
for _n, _sym in [("bitwise_and", "&"), ("bitwise_or", "|"), ("bitwise_xor", "^")]:
    pointwise(_n, getattr(torch, _n), "{0} %s {1}" % _sym, [f"{_n}.Tensor", f"{_n}.Scalar"])
pointwise("where", torch.where, "tl.where({0}, {1}, {2})", ["where.self"], "NO_OPMATH",
          doc="where(cond, a, b); cond does not take part in promotion")
REGISTRY["where"].infer_fn = lambda d, ins, at: [TensorType(
    broadcast_shapes(*[_type_of(v).shape for v in ins if _type_of(v) is not None]),
    elementwise_dtypes(*[_meta(v) for v in ins[1:]], type_promotion_kind=PROMO.NO_OPMATH)[1], None, _device(ins))]

# ----------------------------------------------------------------------------------------------- reductions


def _reducible(node: Node) -> bool:
    """The reduction template takes a non-empty input of rank 1 or more."""
    x = node.inputs[0].type
    return x.numel > 0 and x.rank > 0


def reduction(name, ref, aten=(), reduce: Reduce | None = None, dtype="same", num_outputs=1,
              infer_fn=infer_reduction, dtypes=FLOAT_DTYPES, dim_attr="dims"):
    """A reduction op; with `reduce` the reduction template computes it (on inputs of `dtypes`), else torch."""
    return op(name, "reduction", ref, aten, infer_fn=infer_fn, num_outputs=num_outputs, meta={"dtype": dtype},
              template="reduction" if reduce else None, reduce=reduce, dtypes=dtypes,
              accepts=_reducible if reduce else None, dim_attr=dim_attr)


def _alldims(x, dim):
    return list(range(x.dim())) if dim is None or dim == [] else dim


def _correction(attrs) -> int:
    c = attrs.get("correction", 1)
    return 1 if c is None else c


# the mean, then the sum of squared deviations from it: two passes, as exact as torch's for large means
MEAN = Stat(SUM, ("s",), then=(("mean", "{s} / {n}.0"),))
SQUARED_DEVIATIONS = "({x} - {mean}) * ({x} - {mean})"

reduction("sum", lambda x, dim=None, keepdim=False, dtype=None: torch.sum(x, _alldims(x, dim), keepdim, dtype=dtype),
          ["sum.dim_IntList", "sum.default"], Reduce((Stat(SUM, ("s",)),), ("{s}",)), dtype="sum",
          dtypes=CODEGEN_DTYPES)
reduction("mean", lambda x, dim=None, keepdim=False, dtype=None: torch.mean(x, _alldims(x, dim), keepdim, dtype=dtype),
          ["mean.dim", "mean.default"], Reduce((Stat(SUM, ("s",)),), ("({s} / {n}.0)",)))
reduction("prod", lambda x, dim=None, keepdim=False, dtype=None: (
    torch.prod(x, dtype=dtype) if dim is None else torch.prod(x, dim, keepdim, dtype=dtype)),
          ["prod.dim_int", "prod.default"], Reduce((Stat(PROD, ("p",)),), ("{p}",)), dtype="sum", dim_attr="dim")
reduction("amax", lambda x, dim=None, keepdim=False: torch.amax(x, _alldims(x, dim), keepdim), ["amax.default"],
          Reduce((Stat(MAX, ("m",)),), ("{m}",)))
reduction("amin", lambda x, dim=None, keepdim=False: torch.amin(x, _alldims(x, dim), keepdim), ["amin.default"],
          Reduce((Stat(MIN, ("m",)),), ("{m}",)))
reduction("any", lambda x, dim=None, keepdim=False: torch.any(x, _alldims(x, dim), keepdim) if x.dim() else x.bool(),
          ["any.dim", "any.dims", "any.default"], Reduce((Stat(MAX, ("m",)),), ("({m} != 0)",)), dtype="bool",
          dtypes=frozenset({torch.bool}))
reduction("all", lambda x, dim=None, keepdim=False: torch.all(x, _alldims(x, dim), keepdim) if x.dim() else x.bool(),
          ["all.dim", "all.dims", "all.default"], Reduce((Stat(MIN, ("m",)),), ("({m} != 0)",)), dtype="bool",
          dtypes=frozenset({torch.bool}))
reduction("argmax", lambda x, dim=None, keepdim=False: torch.argmax(x, dim, keepdim), ["argmax.default"],
          Reduce((Stat(ARGMAX, ("val", "idx")),), ("{idx}",)), dtype="int64", dim_attr="dim")
reduction("argmin", lambda x, dim=None, keepdim=False: torch.argmin(x, dim, keepdim), ["argmin.default"],
          Reduce((Stat(ARGMIN, ("val", "idx")),), ("{idx}",)), dtype="int64", dim_attr="dim")
reduction("max_dim", lambda x, dim, keepdim=False: tuple(torch.max(x, dim, keepdim)), ["max.dim"],
          Reduce((Stat(ARGMAX, ("val", "idx")),), ("{val}", "{idx}")), num_outputs=2, dim_attr="dim")
reduction("min_dim", lambda x, dim, keepdim=False: tuple(torch.min(x, dim, keepdim)), ["min.dim"],
          Reduce((Stat(ARGMIN, ("val", "idx")),), ("{val}", "{idx}")), num_outputs=2, dim_attr="dim")
reduction("var", lambda x, dim=None, correction=1, keepdim=False: torch.var(
    x, _alldims(x, dim), correction=1 if correction is None else correction, keepdim=keepdim), ["var.correction"],
          Reduce((MEAN, Stat(SUM, ("ss",), SQUARED_DEVIATIONS)), ("({ss} / {dof}.0)",),
                 params=lambda a, n: {"dof": max(n - _correction(a), 0)}))
reduction("var_mean", lambda x, dim=None, correction=1, keepdim=False: tuple(torch.var_mean(
    x, _alldims(x, dim), correction=1 if correction is None else correction, keepdim=keepdim)),
          ["var_mean.correction"], dtype="same2", num_outputs=2)
reduction("softmax", lambda x, dim, half_to_float=False: torch._softmax(x, dim, half_to_float), ["_softmax.default"],
          Reduce((Stat(ONLINE_SOFTMAX, ("max", "sum")),), ("tl.exp({x} - {max}) / {sum}",)),
          infer_fn=infer_softmax, dim_attr="dim")
reduction("log_softmax", lambda x, dim, half_to_float=False: torch._log_softmax(x, dim, half_to_float),
          ["_log_softmax.default"], Reduce((Stat(ONLINE_SOFTMAX, ("max", "sum")),), ("{x} - {max} - tl.log({sum})",)),
          infer_fn=infer_softmax, dim_attr="dim")


def _infer_layer_norm(inputs, attrs) -> list[TensorType]:
    """(out, mean, rstd). CPU kernels keep mean/rstd in the input dtype; CUDA (and meta) use float32 for
    half types -- inference by meta alone gave float32 on CPU, so half layer norms fell back to torch."""
    t = _type_of(inputs[0])
    k = len(attrs.get("normalized_shape") or ())
    stat_shape = t.shape[:t.rank - k] + (1,) * k
    half = t.dtype in (torch.float16, torch.bfloat16)
    stat_dtype = torch.float32 if half and t.device != "cpu" else t.dtype
    return [TensorType(t.shape, t.dtype, None, t.device)] + [TensorType(stat_shape, stat_dtype, None, t.device)] * 2


reduction("layer_norm", lambda x, weight=None, bias=None, normalized_shape=(), eps=1e-5: tuple(
    torch.native_layer_norm(x, normalized_shape, weight, bias, eps)), ["native_layer_norm.default"],
          Reduce((MEAN, Stat(SUM, ("ss",), SQUARED_DEVIATIONS, then=(("rstd", "tl.rsqrt({ss} / {n}.0 + {eps})"),))),
                 (("({x} - {mean}) * {rstd}", " * {weight}", " + {bias}"), "{mean}", "{rstd}"),
                 inputs=("x", "weight", "bias"), params=lambda a, n: {"eps": repr(a.get("eps", 1e-5))},
                 dims=lambda a, rank: tuple(range(rank - len(a["normalized_shape"]), rank))),
          num_outputs=3, infer_fn=lambda d, ins, at: _infer_layer_norm(ins, at), dim_attr=None)
reduction("cumsum", lambda x, dim, dtype=None: torch.cumsum(x, dim, dtype=dtype), ["cumsum.default"], infer_fn=None,
          dim_attr="dim")

# ----------------------------------------------------------------------------------------------- matmul
def _nonempty_product(node: Node) -> bool:
    """Something to multiply: a non-empty output and K > 0 (A is the second last input of mm, bmm and addmm)."""
    return node.outputs[0].type.numel > 0 and node.inputs[-2].type.shape[-1] > 0


def matmul(name, ref, aten, **kw):
    return op(name, "matmul", ref, aten, infer_fn=infer_matmul, template="matmul", dtypes=FLOAT_DTYPES,
              accepts=_nonempty_product, **kw)


matmul("mm", torch.mm, ["mm.default"])
matmul("bmm", torch.bmm, ["bmm.default"])
matmul("addmm", lambda bias, a, b, beta=1, alpha=1: torch.addmm(bias, a, b, beta=beta, alpha=alpha),
       ["addmm.default"], doc="beta * bias + alpha * (a @ b)")
op("convolution", "opaque", lambda x, w, b=None, stride=(1,), padding=(0,), dilation=(1,), transposed=False,
   output_padding=(0,), groups=1: torch.ops.aten.convolution(x, w, b, stride, padding, dilation, transposed,
                                                             output_padding, groups), ["convolution.default"],
   doc="N-d convolution; runs through torch (cuDNN) with fused neighbours")

# ----------------------------------------------------------------------------------------------- views
def view(name, ref, aten, **kw):
    """A view that kernels read through as index arithmetic (codegen/emit.py: map_view)."""
    return op(name, "view", ref, aten, template="view", **kw)


view("view", lambda x, size: x.reshape(size), ["view.default", "_unsafe_view.default", "reshape.default"],
     doc="reshape; value semantics (a copy where strides do not allow a view)")
view("permute", lambda x, dims: x.permute(dims), ["permute.default"])
view("expand", lambda x, size, implicit=False: x.expand(size), ["expand.default"])
view("slice", lambda x, dim=0, start=None, end=None, step=1: torch.ops.aten.slice.Tensor(x, dim, start, end, step),
     ["slice.Tensor"], dim_attr="dim")
view("select", lambda x, dim, index: x.select(dim, index), ["select.int"], dim_attr="dim")
view("unsqueeze", lambda x, dim: x.unsqueeze(dim), ["unsqueeze.default"])
view("squeeze", lambda x, dim=None: x.squeeze() if dim is None else torch.squeeze(x, dim),
     ["squeeze.dims", "squeeze.dim", "squeeze.default"])
view("alias", lambda x: x.alias() if hasattr(x, "alias") else x[...],
     ["alias.default", "detach.default", "lift_fresh_copy.default"])
op("as_strided", "view", lambda x, size, stride, storage_offset=None: torch.as_strided(x, size, stride, storage_offset),
   ["as_strided.default"], doc="runs as a torch view (kernels do not index through it)")

# ----------------------------------------------------------------------------------------------- data movement
# Those with template="pointwise" are index arithmetic inside pointwise kernels (codegen/emit.py: indexed_expr).
def _nonempty(node: Node) -> bool:
    return node.outputs[0].type.numel > 0


def _by_index_tensor(node: Node) -> bool:
    """embedding, gather, index_select: the index (input 1) is an int64/int32 tensor."""
    return _nonempty(node) and node.inputs[1].type.dtype in INDEX_DTYPES


def _one_index_tensor(node: Node) -> bool:
    """x[idx]: one integer index tensor on dim 0; other advanced indexing runs in torch."""
    return _nonempty(node) and len(node.inputs) == 2 and isinstance(node.inputs[1], Value) and \
        node.inputs[1].type.dtype in INDEX_DTYPES


def _arange_dtype(node: Node) -> bool:
    return _nonempty(node) and node.outputs[0].type.dtype in (torch.int64, torch.int32, torch.float32)


def indexed(name, ref, aten, accepts=_nonempty, **kw):
    return op(name, "data", ref, aten, template="pointwise", accepts=accepts, **kw)


def row_blocks_view(xs) -> torch.Tensor | None:
    """The tensor that cat(xs, dim 0) would make, as a view, when xs are consecutive row blocks of one storage
    (contiguous, same dtype and trailing shape, each starting where the previous one ends); else None."""
    x0 = xs[0]
    if x0.device.type == "meta" or x0.dim() == 0:
        return None
    end = x0.data_ptr()
    for x in xs:
        if x.dtype != x0.dtype or x.device != x0.device or x.shape[1:] != x0.shape[1:] or not x.is_contiguous() \
                or x.data_ptr() != end or x.untyped_storage().data_ptr() != x0.untyped_storage().data_ptr():
            return None
        end += x.numel() * x.element_size()
    shape = (sum(x.shape[0] for x in xs), *x0.shape[1:])
    return x0.as_strided(shape, contiguous_strides(shape))


def _cat(*xs, dim=0, views=False):
    """torch.cat; with `views` (set by passes only on cats of parameters that nothing writes: the merged weights
    of sibling quantized linears), a view of the inputs' storage where they are consecutive row blocks of it."""
    if views and dim == 0:
        v = row_blocks_view(xs)
        if v is not None:
            return v
    return torch.cat(xs, dim)


# a views cat runs through torch (its reference): as a kernel it would write the copy it exists to avoid
indexed("cat", _cat, ["cat.default"], lambda n: _nonempty(n) and not n.attrs.get("views"))
op("constant_pad_nd", "data", lambda x, pad, value=0: torch.constant_pad_nd(x, pad, value), ["constant_pad_nd.default"])
indexed("embedding", lambda weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False:
        torch.embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse), ["embedding.default"],
        _by_index_tensor)
indexed("index", lambda x, *indices: torch.ops.aten.index.Tensor(x, list(indices)), ["index.Tensor"], _one_index_tensor,
        doc="advanced indexing; inputs are x then one index (or None) per leading dim")
indexed("gather", lambda x, index, dim=0, sparse_grad=False: torch.gather(x, dim, index), ["gather.default"],
        _by_index_tensor)
indexed("index_select", lambda x, index, dim=0: torch.index_select(x, dim, index), ["index_select.default"],
        _by_index_tensor)
op("flip", "data", lambda x, dims: torch.flip(x, dims), ["flip.default"])
op("tril", "data", lambda x, diagonal=0: torch.tril(x, diagonal), ["tril.default"])
op("triu", "data", lambda x, diagonal=0: torch.triu(x, diagonal), ["triu.default"])
indexed("full", lambda size, fill_value, dtype=None, layout=None, device=None, pin_memory=None: torch.full(
    size, fill_value, dtype=dtype, device=device), ["full.default"])
indexed("full_like", lambda x, fill_value, dtype=None, layout=None, device=None, pin_memory=None,
        memory_format=None: torch.full_like(x, fill_value, dtype=dtype), ["full_like.default"])
indexed("arange", lambda start=0, end=None, step=1, dtype=None, layout=None, device=None, pin_memory=None:
        torch.arange(start, end, step, dtype=dtype, device=device), ["arange.start_step", "arange.default",
                                                                      "arange.start"], _arange_dtype)
indexed("scalar_tensor", lambda s, dtype=None, layout=None, device=None, pin_memory=None: torch.scalar_tensor(
    s, dtype=dtype, device=device), ["scalar_tensor.default"])
op("channels_last", "data", lambda x: x.contiguous(memory_format=torch.channels_last), (),
   doc="the same values in NHWC memory order (one copy), chosen by the layout pass for convolutions")
op("constant", "data", lambda value: value, (), doc="a tensor constant captured from the program")

# ----------------------------------------------------------------------------------------------- opaque
def _sumsq_tiles(x, tile=16):
    """float32 sums of squares of x over consecutive `tile`-long pieces of its last dim: [..., N / tile]."""
    return x.float().pow(2).reshape(*x.shape[:-1], x.shape[-1] // tile, tile).sum(-1)


op("sumsq_tiles", "opaque", _sumsq_tiles, (),
   doc="partial sums of squares of an RMSNorm's input (passes/quantize.py fold_rms_norm): a quantized GEMM's "
       "epilogue writes them, the next quantized GEMM reduces them into the norm's scale")
op("max_pool2d", "opaque", lambda x, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False: tuple(
    torch.ops.aten.max_pool2d_with_indices(x, kernel_size, stride, padding, dilation, ceil_mode)),
   ["max_pool2d_with_indices.default"], num_outputs=2)
op("avg_pool2d", "opaque", lambda x, kernel_size, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True,
   divisor_override=None: torch.ops.aten.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                                    divisor_override), ["avg_pool2d.default"])
op("adaptive_avg_pool2d", "opaque", lambda x, output_size: torch.ops.aten._adaptive_avg_pool2d(x, output_size),
   ["_adaptive_avg_pool2d.default"])
op("batch_norm", "opaque", lambda x, weight=None, bias=None, running_mean=None, running_var=None, momentum=0.1,
   eps=1e-5: tuple(torch.ops.aten._native_batch_norm_legit_no_training(x, weight, bias, running_mean, running_var,
                                                                          momentum, eps)),
   ["_native_batch_norm_legit_no_training.default"], num_outputs=3, doc="eval-mode batch norm",
   infer_fn=lambda d, ins, at: [ins[0].type.with_shape(ins[0].type.shape)] + [_bn_stats_type(ins[0].type)] * 2)


_NO_GQA: set[str] = set()  # attention variants found not to take grouped k/v (they get k/v expanded)


def _sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, variant=None, enable_gqa=False):
    """The captured CUDA attention kernel itself when the graph named one (`variant`), so that its inputs reach it
    exactly as they reached it in eager (F.scaled_dot_product_attention may pick another kernel and convert or
    copy the mask first); F.scaled_dot_product_attention elsewhere. `enable_gqa`: k/v have fewer heads than q
    (each serves q.shape[1] // k.shape[1] query heads); a variant that refuses them gets them expanded."""
    if variant is None or not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                              **({"enable_gqa": True} if enable_gqa else {}))
    from ..codegen import small_attention as small

    if small.enabled() and small.supported(q, k, v, attn_mask):  # (TILECRAFT_SMALL_ATTN=0: never)
        out = small.attention_like(variant, q, k, v, is_causal, scale, attn_mask)
        if out is not None:
            return out
    if enable_gqa and variant in _NO_GQA:
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    try:
        return sdpa_variant(variant, q, k, v, attn_mask, is_causal, scale)
    except RuntimeError:
        if not enable_gqa or variant in _NO_GQA:
            raise
        _NO_GQA.add(variant)
        return _sdpa(q, k, v, attn_mask, is_causal, scale, variant, enable_gqa)


def sdpa_variant(variant: str, q, k, v, attn_mask=None, is_causal=False, scale=None):
    """The attention output of ATen's kernel `variant` (e.g. `_scaled_dot_product_cudnn_attention`); on meta
    tensors, the layout that kernel gives (passes/layout.py `_sdpa_layout`)."""
    op = getattr(torch.ops.aten, variant).default
    kw = {"query": q, "key": k, "value": v, "is_causal": is_causal, "scale": scale}
    names = {a.name for a in op._schema.arguments}
    if "attn_bias" in names:
        kw["attn_bias"] = attn_mask
    if "compute_log_sumexp" in names:
        kw["compute_log_sumexp"] = False
    return op(**kw)[0]


op("sdpa", "opaque", _sdpa, (),
   doc="scaled dot-product attention through torch (flash / cuDNN / memory-efficient kernels on CUDA); "
       "the CUDA attention variants import to it, the CPU one is decomposed into matmuls and a softmax")


def _bn_stats_type(x: TensorType) -> TensorType:
    """The saved mean/rstd of eval-mode batch norm: empty on the CPU, float32 [C] (half inputs) on CUDA."""
    if x.device == "cpu":
        return TensorType((0,), x.dtype, None, x.device)
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return TensorType((x.shape[1],), dt, None, x.device)


class Slot(int):
    """Placeholder for the i-th tensor input of a torch_op node inside its args."""

    def __repr__(self):
        return f"${int(self)}"


def _fill(obj, inputs):
    if isinstance(obj, Slot):
        return inputs[obj]
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(o, inputs) for o in obj)
    if isinstance(obj, dict):
        return {k: _fill(v, inputs) for k, v in obj.items()}
    return obj


def _run_torch_op(*inputs, target, args=None, kwargs=None):
    if args is None:  # plain positional call on the inputs
        return target(*inputs, **(kwargs or {}))
    return target(*_fill(args, inputs), **_fill(kwargs or {}, inputs))


op("torch_op", "opaque", _run_torch_op, (), doc="any ATen op the IR lacks: runs through torch as is")
