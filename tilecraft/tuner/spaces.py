"""Config spaces per kernel template: knobs with candidate values, and rules that prune predictably bad configs.

A config is a plain dict knob -> value; the knob names are the contract with codegen, which launches with
`kernel.launch(args, config)`. `space_for(template, shapes, dtype, device)` builds the space for one problem.

Templates declare themselves in `TEMPLATES` with `register_template(name, space=builder, family=..., ...)`, from
their own module (codegen's built-in templates are registered at the bottom of this file; the quantized ones in
tilecraft/quant/kernels.py). A kernel object may instead carry its own space: `kernel.config_space(device)`, or
knob candidates in `kernel.info["space"]` filtered by its `check_config` (see `space_for_kernel`).
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..ir.types import next_pow2
from .device import DeviceInfo

Config = dict


def pow2_range(lo: int, hi: int) -> list[int]:
    return [1 << i for i in range(int(math.log2(lo)), int(math.log2(hi)) + 1)]


def config_key(config: Config) -> str:
    """A canonical string for a config (sorted JSON): equality, dedup and database storage."""
    return json.dumps(config, sort_keys=True)


@functools.lru_cache(maxsize=None)
def itemsize(dtype) -> int:
    """Bytes per element of a torch dtype or its name."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return torch.empty((), dtype=dtype).element_size()


@dataclass
class ConfigSpace:
    """Knobs -> ordered candidate values, plus a validity rule returning why a config is invalid (or None)."""

    template: str
    knobs: dict[str, list]
    rule: Callable[[Config], str | None] = field(default=lambda c: None)
    fixed: dict = field(default_factory=dict)  # knobs with one forced value (not searched)
    _valid: list | None = field(default=None, repr=False, compare=False)

    def why_invalid(self, config: Config) -> str | None:
        for k, vals in self.knobs.items():
            if config.get(k) not in vals:
                return f"{k}={config.get(k)!r} not in {vals}"
        return self.rule(config)

    def valid(self, config: Config) -> bool:
        return self.why_invalid(config) is None

    def _complete(self, config: Config) -> Config:
        return {**config, **self.fixed}

    def enumerate(self, limit: int | None = None) -> list[Config]:
        """All valid configs in a fixed order (product of knob values, filtered; cached by `valid_configs`)."""
        if limit is None and self._valid is not None:
            return [dict(c) for c in self._valid]
        out = []
        names = list(self.knobs)
        for vals in itertools.product(*(self.knobs[n] for n in names)):
            c = self._complete(dict(zip(names, vals)))
            if self.rule(c) is None:
                out.append(c)
                if limit is not None and len(out) >= limit:
                    break
        return out

    def iter_raw(self) -> Iterator[Config]:
        names = list(self.knobs)
        for vals in itertools.product(*(self.knobs[n] for n in names)):
            yield self._complete(dict(zip(names, vals)))

    def size(self) -> int:
        return len(self.enumerate())

    def raw_size(self) -> int:
        return math.prod(len(v) for v in self.knobs.values())

    def valid_configs(self) -> list[Config]:
        """`enumerate()`, computed once per space object (sampling draws from it when the product is small)."""
        if getattr(self, "_valid", None) is None:
            self._valid = self.enumerate()
        return self._valid

    def sample(self, rng: random.Random, tries: int = 1000) -> Config:
        """A uniformly drawn valid config (from the cached valid set when the knob product is small or the set is
        known, else by rejection sampling that falls back to enumerating it once: a sparse subset space)."""
        if self._valid is not None or self.raw_size() <= 50_000:
            allc = self.valid_configs()
            if not allc:
                raise ValueError(f"{self.template} config space has no valid config")
            return dict(rng.choice(allc))
        for _ in range(tries):
            c = self._complete({k: rng.choice(v) for k, v in self.knobs.items()})
            if self.rule(c) is None:
                return c
        allc = self.valid_configs()
        if not allc:
            raise ValueError(f"{self.template} config space has no valid config")
        return dict(rng.choice(allc))

    def neighbors(self, config: Config) -> list[Config]:
        """Valid configs one step away: one knob moved to an adjacent candidate value."""
        out = []
        for k, vals in self.knobs.items():
            if len(vals) < 2 or config.get(k) not in vals:
                continue
            i = vals.index(config[k])
            for j in (i - 1, i + 1):
                if 0 <= j < len(vals):
                    c = dict(config, **{k: vals[j]})
                    if self.rule(c) is None:
                        out.append(c)
        return out

    def mutate(self, config: Config, rng: random.Random, n_knobs: int = 1, tries: int = 50) -> Config:
        """Change `n_knobs` random knobs (adjacent value mostly, any value sometimes); stays valid."""
        keys = [k for k, v in self.knobs.items() if len(v) > 1]
        for _ in range(tries):
            c = dict(config)
            for k in rng.sample(keys, min(n_knobs, len(keys))):
                vals = self.knobs[k]
                i = vals.index(c[k]) if c.get(k) in vals else rng.randrange(len(vals))
                if rng.random() < 0.75:
                    j = min(len(vals) - 1, max(0, i + rng.choice((-1, 1))))
                else:
                    j = rng.randrange(len(vals))
                c[k] = vals[j]
            if c != config and self.rule(c) is None:
                return c
        return self.sample(rng)

    def crossover(self, a: Config, b: Config, rng: random.Random, tries: int = 20) -> Config:
        """Each knob from one parent at random (a knob only one of them sets, e.g. a kernel's default config that
        leaves one to the kernel: from that one); stays valid (else a mutation of `a`)."""
        for _ in range(tries):
            keys = list(a) + [k for k in b if k not in a]  # (in order: a seeded search repeats itself)
            c = {k: (a if k in a and (k not in b or rng.random() < 0.5) else b)[k] for k in keys}
            if self.rule(c) is None:
                return c
        return self.mutate(a, rng)


# ----------------------------------------------------------------------------------------------------------
# Templates. Each builder gets (shapes, dtype, device) and returns a ConfigSpace.

def gemm_smem_bytes(cfg: Config, a_itemsize: int, b_itemsize: int | None = None, gemms: int = 1) -> int:
    """Shared memory of a software-pipelined GEMM as Triton allocates it: num_stages - 1 buffers (at least one) of
    (BM*BK + gemms*BK*BN) * itemsize, since the stage being computed reads registers loaded from the previous
    buffer (a dual GEMM, gemms=2, loads one A tile and two B tiles per step). Counting num_stages buffers
    removed Hopper configs that run, e.g. 128x128x128 fp16 with 4 stages: 192 KB, not 256 KB, of 227 KB."""
    b_itemsize = a_itemsize if b_itemsize is None else b_itemsize
    bm = cfg.get("BLOCK_M", 16)
    return (bm * cfg["BLOCK_K"] * a_itemsize + gemms * cfg["BLOCK_K"] * cfg["BLOCK_N"] * b_itemsize) * \
        max(1, cfg.get("num_stages", 1) - 1)


def gemm_acc_regs_per_thread(cfg: Config, gemms: int = 1) -> float:
    """fp32 accumulator registers per thread: gemms * BM*BN / (32 * num_warps)."""
    return gemms * cfg.get("BLOCK_M", 16) * cfg["BLOCK_N"] / (32 * cfg["num_warps"])


MAX_ACC_REGS = 128  # beyond this the accumulator alone spills (255 registers/thread minus operands)
MIN_M_TILE = 64  # BLOCK_M may exceed a small M up to this: a Hopper wgmma is 64 rows, so M=16 runs best at 32-64


def tile_too_large(block: int, dim: int, floor: int = 16) -> bool:
    """A tile larger than the problem's next power of two (and than `floor`) only pads."""
    return block > max(floor, next_pow2(dim))


def splitk_useful(M: int, N: int, K: int, device: DeviceInfo) -> bool:
    """Split-K pays only when K is long and the output has too few 128x128 tiles to fill the device."""
    tiles = math.ceil(M / 128) * math.ceil(N / 128)
    return K >= 1024 and (K >= 4 * math.sqrt(M * N) or tiles < device.sm_count // 2)


def variant_knobs(device: DeviceInfo) -> dict[str, list]:
    """The codegen matmul's variant knobs (codegen/matmul.py): PERSISTENT (one program per SM looping over
    tiles) on every device; TMA (descriptor loads) from compute capability 9 (Hopper), and on the interpreter,
    which runs descriptors too, so that CPU tests see the space the GPU tunes; EPILOGUE_SUBTILE (the epilogue on
    two half tiles); FLATTEN (one flattened tile x K loop); WARP_SPECIALIZE only from capability 10, the only
    one Triton 3.6 documents it for."""
    cc, interp = tuple(device.capability), device.name == "cpu-interpreter"
    return {"PERSISTENT": [0, 1], "TMA": [0, 1] if cc >= (9, 0) or interp else [0], "EPILOGUE_SUBTILE": [0, 1],
            "FLATTEN": [0, 1], "WARP_SPECIALIZE": [0, 1] if cc >= (10, 0) else [0]}


def with_variant_knobs(space: ConfigSpace, device: DeviceInfo) -> ConfigSpace:
    """A matmul space plus the codegen matmul's variant knobs (what `space_for_kernel` searches for a codegen
    matmul kernel; plain `space_for("matmul", ...)` keeps the classic knobs that every GEMM kernel takes)."""
    return ConfigSpace(space.template, {**space.knobs, **variant_knobs(device)}, space.rule, dict(space.fixed))


def with_backend_knob(space: ConfigSpace, default: Config) -> ConfigSpace:
    """A codegen matmul kernel runs its generated GEMM or its ATen plan (cuBLAS) by its BACKEND knob: search
    both. ATen ignores every other knob, so it is kept with the default's values only (one config, not one per
    tile); on a GPU that is the default config, measured first."""
    rule, others = space.rule, {k: v for k, v in default.items() if k != "BACKEND"}

    def backend_rule(c: Config) -> str | None:
        if c.get("BACKEND") == "aten":
            same = all(c.get(k) == v for k, v in others.items())
            return None if same else "BACKEND=aten runs cuBLAS: the other knobs keep their default values"
        return rule(c)

    return ConfigSpace(space.template, {**space.knobs, "BACKEND": ["triton", "aten"]}, backend_rule, dict(space.fixed))


def matmul_space(shapes: dict, dtype, device: DeviceInfo) -> ConfigSpace:
    M, N, K, G = shapes["M"], shapes["N"], shapes["K"], shapes.get("G", 1)
    isz = itemsize(dtype)
    blocks = pow2_range(16, 256)
    split = [1, 2, 4, 8] if splitk_useful(M, N, K, device) else [1]
    knobs = {"BLOCK_M": blocks, "BLOCK_N": blocks, "BLOCK_K": blocks, "GROUP_M": [1, 4, 8],
             "SPLIT_K": split, "num_warps": [2, 4, 8], "num_stages": [2, 3, 4, 5]}

    def rule(c: Config) -> str | None:
        if not c.get("PERSISTENT") and any(c.get(k) for k in ("TMA", "EPILOGUE_SUBTILE", "FLATTEN",
                                                               "WARP_SPECIALIZE")):
            return "TMA, EPILOGUE_SUBTILE, FLATTEN and WARP_SPECIALIZE are knobs of the persistent variant " \
                "(PERSISTENT=1)"
        if c.get("PERSISTENT") and c.get("SPLIT_K", 1) > 1:
            return "the persistent variant has no split-K"
        if c.get("EPILOGUE_SUBTILE") and c["BLOCK_N"] < 32:
            return "EPILOGUE_SUBTILE needs BLOCK_N >= 32 (two halves of at least 16)"
        if tile_too_large(c["BLOCK_M"], M, MIN_M_TILE) or tile_too_large(c["BLOCK_N"], N):
            return "tile larger than the problem"
        if c["BLOCK_K"] * c.get("SPLIT_K", 1) > max(16, next_pow2(K)):
            return "BLOCK_K * SPLIT_K larger than K"
        smem = gemm_smem_bytes(c, isz, gemms=G)
        if smem > device.smem_per_block:
            return f"shared memory {smem} B > {device.smem_per_block} B"
        if gemm_acc_regs_per_thread(c, G) > MAX_ACC_REGS:
            return "accumulator needs too many registers per thread"
        if c["BLOCK_M"] * c["BLOCK_N"] < 32 * c["num_warps"] * 2:
            return "tile too small for num_warps"
        if c["GROUP_M"] > 1 and math.ceil(M / c["BLOCK_M"]) <= 1:
            return "GROUP_M > 1 with one row of tiles"
        return None

    return ConfigSpace("matmul", knobs, rule)


MIN_RBLOCK = 16  # tl.arange/tl.reduce tiles narrower than this waste most of a warp
MAX_REDUCTION_BLOCK = 8192  # XBLOCK*RBLOCK elements per program: fused reductions keep several such tiles live


def reduction_space(shapes: dict, dtype, device: DeviceInfo) -> ConfigSpace:
    rows, cols = shapes["rows"], shapes["cols"]
    knobs = {"XBLOCK": pow2_range(1, 64), "RBLOCK": pow2_range(MIN_RBLOCK, 8192), "num_warps": [1, 2, 4, 8, 16]}

    def rule(c: Config) -> str | None:
        if c["XBLOCK"] > next_pow2(rows):
            return "XBLOCK larger than the rows"
        if c["RBLOCK"] > max(16, next_pow2(cols)):
            return "RBLOCK larger than one pass over the row"
        elems = c["XBLOCK"] * c["RBLOCK"]
        if elems > MAX_REDUCTION_BLOCK:
            return f"XBLOCK*RBLOCK > {MAX_REDUCTION_BLOCK}: too large for registers"
        if elems > 64 * 32 * c["num_warps"]:
            return "more than 64 elements per thread per accumulator"
        if elems < 32 * c["num_warps"]:
            return "block smaller than the threads"
        return None

    return ConfigSpace("reduction", knobs, rule)


def pointwise_space(shapes: dict, dtype, device: DeviceInfo) -> ConfigSpace:
    numel = shapes["numel"]
    knobs = {"XBLOCK": pow2_range(64, 4096), "num_warps": [1, 2, 4, 8]}

    def rule(c: Config) -> str | None:
        if c["XBLOCK"] > max(64, next_pow2(numel)):
            return "XBLOCK larger than the tensor"
        if c["XBLOCK"] < 32 * c["num_warps"]:
            return "fewer elements than threads"
        if c["XBLOCK"] > 32 * c["num_warps"] * 32:
            return "more than 32 elements per thread"
        return None

    return ConfigSpace("pointwise", knobs, rule)


@dataclass(frozen=True)
class TemplateInfo:
    """What the tuner knows of a kernel template, declared by the template's module.

    space: builder(shapes, dtype, device) -> ConfigSpace (None: kernels of this template carry their own space);
    family: which features describe it ("gemm": M/N/K tiles, "reduction": rows/cols, "pointwise": numel; None:
    guessed from the shape names); weight_itemsize: bytes per B/weight element when it is not the activation
    dtype (1 for int8/fp8 weights)."""

    space: Callable[[dict, object, DeviceInfo], ConfigSpace] | None = None
    family: str | None = None
    weight_itemsize: int | None = None


TEMPLATES: dict[str, TemplateInfo] = {}


def register_template(template: str, space: Callable[[dict, object, DeviceInfo], ConfigSpace] | None = None,
                      family: str | None = None, weight_itemsize: int | None = None) -> None:
    """Declare (or redeclare) a template's config space and feature traits; see `TemplateInfo`."""
    TEMPLATES[template] = TemplateInfo(space, family, weight_itemsize)


def register_space(template: str, builder: Callable[[dict, object, DeviceInfo], ConfigSpace]) -> None:
    """Add or replace the space builder of a template, keeping its other traits."""
    old = TEMPLATES.get(template, TemplateInfo())
    TEMPLATES[template] = TemplateInfo(builder, old.family, old.weight_itemsize)


def template_info(template: str, shapes: dict | None = None) -> TemplateInfo:
    """The declared traits of a template; an undeclared one gets its family guessed from its shape names."""
    info = TEMPLATES.get(template)
    if info is not None and info.family is not None:
        return info
    shapes = shapes or {}
    family = "gemm" if {"N", "K"} <= set(shapes) else "reduction" if "rows" in shapes else "pointwise"
    return TemplateInfo(info.space if info else None, family, info.weight_itemsize if info else None)


def space_for(template: str, shapes: dict, dtype, device_info: DeviceInfo) -> ConfigSpace:
    """The config space of one kernel problem on one device."""
    builder = TEMPLATES[template].space if template in TEMPLATES else None
    if builder is None:
        known = sorted(t for t, i in TEMPLATES.items() if i.space is not None)
        raise KeyError(f"no config space for template {template!r}; known: {known} (a template declares one "
                       f"with tilecraft.tuner.spaces.register_template, from its own module)")
    return builder(shapes, dtype, device_info)


def restrict(space: ConfigSpace, **values: list) -> ConfigSpace:
    """The same space with some knobs limited to the given values (bench/tests use it for bounded spaces)."""
    knobs = dict(space.knobs)
    for k, v in values.items():
        if k not in knobs:
            raise KeyError(f"{space.template} has no knob {k!r}; knobs: {list(knobs)}")
        knobs[k] = [x for x in knobs[k] if x in v] or list(v)
    return ConfigSpace(space.template, knobs, space.rule, dict(space.fixed))


def subset_space(space: ConfigSpace, configs: list[Config]) -> ConfigSpace:
    """The space limited to the given configs (a bounded set that strategies share, e.g. in benchmarks); it
    enumerates them in the given order."""
    allowed = {config_key(c) for c in configs}
    rule = space.rule

    def subset_rule(c: Config) -> str | None:
        return rule(c) or (None if config_key(c) in allowed else "not in the bounded subset")

    sub = ConfigSpace(space.template, space.knobs, subset_rule, dict(space.fixed))
    valid: dict[str, Config] = {}
    for c in configs:  # the valid set is known: sampling and enumeration need not walk the knob product
        c = sub._complete(c)
        if sub.rule(c) is None:
            valid.setdefault(config_key(c), c)
    sub._valid = list(valid.values())
    return sub


def space_for_kernel(kernel, device_info: DeviceInfo) -> ConfigSpace:
    """The space of one kernel object: `kernel.config_space(device_info)` when it has one; its own knob
    candidates when it declares them (`kernel.info["space"]`, e.g. the quantized templates), filtered by its
    `check_config` and the shared-memory limit; else the template's space from `space_for`, fitted to the knobs
    the kernel takes (see `fit_to_kernel`)."""
    if callable(getattr(kernel, "config_space", None)):
        return kernel.config_space(device_info)
    info = getattr(kernel, "info", None)
    knobs = info.get("space") if isinstance(info, dict) else None
    if not knobs:
        space, default = space_for(kernel.template, kernel.shapes, kernel.dtype, device_info), kernel.default_config()
        if kernel.template == "matmul" and "PERSISTENT" in default:
            space = with_variant_knobs(space, device_info)
        if kernel.template == "matmul" and "BACKEND" in default and getattr(kernel, "aten", None) is not None:
            space = with_backend_knob(space, default)
        return fit_to_kernel(space, default)
    check = getattr(kernel, "check_config", None)
    a_isz = itemsize(kernel.dtype)
    w_isz = template_info(kernel.template, kernel.shapes).weight_itemsize or a_isz

    def rule(c: Config) -> str | None:
        if check is not None:
            try:
                check(c)
            except Exception as e:  # the kernel says why it cannot run this config
                return f"{type(e).__name__}: {e}"
        if {"BLOCK_N", "BLOCK_K", "num_stages"} <= set(c):
            smem = gemm_smem_bytes({"BLOCK_M": c.get("BLOCK_M", 1), **c}, a_isz, w_isz)
            if smem > device_info.smem_per_block:
                return f"shared memory {smem} B > {device_info.smem_per_block} B"
        return None

    return ConfigSpace(kernel.template, {k: list(v) for k, v in knobs.items()}, rule)


def fit_to_kernel(space: ConfigSpace, default: Config) -> ConfigSpace:
    """The template space limited to the knobs a kernel actually takes (its default config's keys): a knob the
    kernel lacks is dropped (codegen's matmul has a fused epilogue, so no SPLIT_K), and a knob the space does
    not search is fixed at its default value. Every config of the result has exactly the default's keys."""
    knobs = {k: list(v) for k, v in space.knobs.items() if k in default}
    fixed = {k: v for k, v in default.items() if k not in knobs}
    if set(knobs) == set(space.knobs) and not fixed:
        return space
    return ConfigSpace(space.template, knobs, space.rule, fixed)


# codegen's built-in templates (a template module may redeclare its own with register_template)
register_template("matmul", matmul_space, "gemm")
register_template("reduction", reduction_space, "reduction")
register_template("pointwise", pointwise_space, "pointwise")
