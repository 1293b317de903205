"""Valid random applications of every registered op: (input tensors and scalars, attrs).

Used by the registry tests (inference must agree with torch) and by the fuzzer as a source of op patterns.
"""
from __future__ import annotations

import random

import torch

from .ops import REGISTRY

FLOATS = [torch.float32, torch.float16, torch.bfloat16]


def _shape(r: random.Random, rank=None, lo=1, hi=6):
    rank = r.randint(1, 4) if rank is None else rank
    return tuple(r.randint(lo, hi) for _ in range(rank))


def _t(r, shape, dtype=torch.float32, positive=False):
    g = torch.Generator().manual_seed(r.randrange(2**31))
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-5 if not positive else 1, 6, shape, generator=g, dtype=dtype)
    x = torch.randn(shape, generator=g)
    return (x.abs() + 0.1 if positive else x).to(dtype)


def _bcast_partner(r, shape):
    """A shape that broadcasts with `shape` (drop leading dims, set some dims to 1)."""
    s = list(shape[r.randint(0, len(shape)):]) if r.random() < 0.5 else list(shape)
    return tuple(1 if r.random() < 0.3 else d for d in s)


POSITIVE = {"log", "log2", "sqrt", "rsqrt", "log1p", "pow", "reciprocal"}
INTS = {"bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor"}


def sample(name: str, r: random.Random):
    """One random valid (inputs, attrs) for op `name`."""
    d = REGISTRY[name]
    f = _SPECIAL.get(name)
    if f is not None:
        return f(r)
    if d.category == "pointwise":
        shape = _shape(r)
        dtype = torch.int32 if name in INTS else r.choice(FLOATS)
        x = _t(r, shape, dtype, name in POSITIVE)
        if name in _UNARY:
            return [x], _UNARY_ATTR.get(name, lambda r: {})(r)
        other = _t(r, _bcast_partner(r, shape), dtype if r.random() < 0.7 or name in INTS else torch.float32,
                   name in POSITIVE)
        if r.random() < 0.25 and any(a.endswith(".Scalar") for a in d.aten) and name not in INTS:
            other = r.choice([2.0, 0.5, 3])
        return [x, other], {}
    raise KeyError(f"no sampler for op {name}")


_UNARY = {n for n, d in REGISTRY.items() if d.category == "pointwise"} - {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "where"}
_UNARY_ATTR = {
    "cast": lambda r: {"dtype": r.choice(FLOATS + [torch.int32])},
    "pow_scalar": lambda r: {"exponent": r.choice([2, 3, 0.5, -1, 1.5])},
    "clamp": lambda r: r.choice([{"min": -0.5}, {"max": 0.5}, {"min": -0.5, "max": 0.5}]),
    "leaky_relu": lambda r: {"negative_slope": 0.1},
    "gelu": lambda r: {"approximate": r.choice(["none", "tanh"])},
}


def _reduce(dtype_ok=FLOATS, **extra):
    def f(r):
        shape = _shape(r)
        x = _t(r, shape, r.choice(dtype_ok))
        dims = sorted(r.sample(range(len(shape)), r.randint(1, len(shape))))
        return [x], {"dim": dims, "keepdim": r.random() < 0.5, **extra}
    return f


def _one_dim(dtype_ok=FLOATS, keep=True, **extra):
    def f(r):
        shape = _shape(r)
        x = _t(r, shape, r.choice(dtype_ok))
        a = {"dim": r.randrange(-len(shape), len(shape)), **extra}
        if keep:
            a["keepdim"] = r.random() < 0.5
        return [x], a
    return f


def _mm(r):
    m, k, n = r.randint(1, 9), r.randint(1, 9), r.randint(1, 9)
    dt = r.choice(FLOATS)
    return [_t(r, (m, k), dt), _t(r, (k, n), dt)], {}


def _view(r):
    shape = _shape(r)
    numel = 1
    for s in shape:
        numel *= s
    return [_t(r, shape)], {"size": [numel // shape[0], shape[0]] if r.random() < 0.5 else [-1]}


def _permute(r):
    shape = _shape(r)
    dims = list(range(len(shape)))
    r.shuffle(dims)
    return [_t(r, shape)], {"dims": dims}


def _expand(r):
    shape = _shape(r)
    src = tuple(1 if r.random() < 0.5 else s for s in shape)
    return [_t(r, src)], {"size": list(shape)}


def _slice(r):
    shape = _shape(r)
    dim = r.randrange(len(shape))
    start = r.randrange(shape[dim])
    return [_t(r, shape)], {"dim": dim, "start": start, "end": r.randint(start + 1, shape[dim]),
                            "step": r.choice([1, 2])}


def _conv(r):
    c_in, c_out = r.randint(1, 4), r.randint(1, 4)
    return [_t(r, (2, c_in, 7, 7)), _t(r, (c_out, c_in, 3, 3)), _t(r, (c_out,))], {
        "stride": [1, 1], "padding": [1, 1], "dilation": [1, 1], "transposed": False, "output_padding": [0, 0],
        "groups": 1}


def _layer_norm(r):
    shape = _shape(r, rank=r.randint(2, 3))
    x = _t(r, shape)
    return [x, _t(r, shape[-1:]), _t(r, shape[-1:])], {"normalized_shape": list(shape[-1:]), "eps": 1e-5}


def _index(r):
    shape = _shape(r, rank=2)
    return [_t(r, shape), torch.randint(0, shape[0], (3,))], {}


def _torch_op(r):
    return [_t(r, _shape(r))], {"target": torch.ops.aten.erfinv.default}


_SPECIAL = {
    "sum": _reduce(FLOATS + [torch.int32]), "mean": _reduce(), "amax": _reduce(), "amin": _reduce(),
    "any": _reduce([torch.bool, torch.float32]), "all": _reduce([torch.bool, torch.float32]),
    "var": _reduce([torch.float32], correction=1), "var_mean": _reduce([torch.float32], correction=0),
    "prod": _one_dim(), "argmax": _one_dim(), "argmin": _one_dim(), "max_dim": _one_dim(), "min_dim": _one_dim(),
    "softmax": _one_dim(keep=False, half_to_float=False), "log_softmax": _one_dim(keep=False, half_to_float=False),
    "cumsum": _one_dim([torch.float32], keep=False),
    "sumsq_tiles": lambda r: ([_t(r, (*_shape(r)[:-1], 16 * r.randint(1, 4)), r.choice(FLOATS))],
                              {"tile": 16}),
    "layer_norm": _layer_norm,
    "mm": _mm,
    "bmm": lambda r: (lambda b, m, k, n: ([_t(r, (b, m, k)), _t(r, (b, k, n))], {}))(*[r.randint(1, 6) for _ in "bmkn"]),
    "addmm": lambda r: (lambda ins: ([_t(r, (ins[1].shape[1],), ins[0].dtype), *ins], {"beta": 1, "alpha": 1}))(_mm(r)[0]),
    "convolution": _conv,
    "view": _view, "permute": _permute, "expand": _expand, "slice": _slice,
    "select": lambda r: (lambda s: ([_t(r, s)], {"dim": len(s) - 1, "index": r.randrange(s[-1])}))(_shape(r)),
    "unsqueeze": lambda r: (lambda s: ([_t(r, s)], {"dim": r.randint(0, len(s))}))(_shape(r)),
    "squeeze": lambda r: ([_t(r, (3, 1, 4, 1))], {"dim": [1, 3]}),
    "alias": lambda r: ([_t(r, _shape(r))], {}),
    "as_strided": lambda r: ([_t(r, (4, 6))], {"size": [3, 2], "stride": [6, 2], "storage_offset": 1}),
    "cat": lambda r: (lambda s: ([_t(r, s), _t(r, s[:-1] + (2,))], {"dim": len(s) - 1}))(_shape(r)),
    "constant_pad_nd": lambda r: ([_t(r, _shape(r))], {"pad": [1, 2], "value": 0.5}),
    "embedding": lambda r: ([_t(r, (10, 4)), torch.randint(0, 10, (2, 3))], {}),
    "index": _index,
    "gather": lambda r: ([_t(r, (4, 5)), torch.randint(0, 5, (4, 3))], {"dim": 1}),
    "index_select": lambda r: ([_t(r, (4, 5)), torch.randint(0, 4, (3,))], {"dim": 0}),
    "flip": lambda r: ([_t(r, (3, 4))], {"dims": [r.randrange(2)]}),
    "tril": lambda r: ([_t(r, (4, 5))], {"diagonal": r.randint(-1, 1)}),
    "triu": lambda r: ([_t(r, (4, 5))], {"diagonal": r.randint(-1, 1)}),
    "full": lambda r: ([], {"size": list(_shape(r)), "fill_value": 1.5, "dtype": torch.float32}),
    "full_like": lambda r: ([_t(r, _shape(r))], {"fill_value": 2, "dtype": torch.int64}),
    "arange": lambda r: ([], {"start": 0, "end": r.randint(1, 9), "step": 1, "dtype": torch.int64}),
    "scalar_tensor": lambda r: ([], {"s": 1.5, "dtype": torch.float32}),
    "channels_last": lambda r: ([_t(r, (2, 3, 4, 5))], {}),
    "constant": lambda r: ([], {"value": _t(r, _shape(r))}),
    "max_pool2d": lambda r: ([_t(r, (2, 3, 8, 8))], {"kernel_size": [2, 2], "stride": [2, 2]}),
    "avg_pool2d": lambda r: ([_t(r, (2, 3, 8, 8))], {"kernel_size": [2, 2], "stride": [2, 2]}),
    "adaptive_avg_pool2d": lambda r: ([_t(r, (2, 3, 8, 8))], {"output_size": [1, 1]}),
    "batch_norm": lambda r: ([_t(r, (2, 3, 4, 4)), _t(r, (3,)), _t(r, (3,)), _t(r, (3,)), _t(r, (3,), positive=True)],
                             {"momentum": 0.1, "eps": 1e-5}),
    "sdpa": lambda r: ([_t(r, (2, 3, 5, 8)) for _ in range(3)], {"is_causal": r.random() < 0.5, "scale": None}),
    "torch_op": _torch_op,
    "where": lambda r: (lambda s: ([_t(r, s, torch.bool), _t(r, _bcast_partner(r, s)), r.choice(
        [0.0, _t(r, s, torch.bfloat16)])], {}))(_shape(r)),
}
