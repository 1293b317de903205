"""A generated Triton kernel with a tunable launch config, and the on-disk kernel source cache.

Every template (pointwise, reduction, matmul, quantized matmul, ...) produces a `Kernel`. The tuner only sees
this protocol: `template`, `shapes`, `dtype`, `key`, `default_config()`, `launch(args, config)`,
`make_args(device, seed)` and `out_positions`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import triton

# Config keys that are launch options rather than kernel constexprs.
LAUNCH_KEYS = ("num_warps", "num_stages")


@functools.cache
def interpreting() -> bool:
    """Do tilecraft's Triton kernels run through Triton's CPU interpreter? When TRITON_INTERPRET says so, or when
    there is no CUDA (then only tilecraft's own kernels are interpreted, see `own_kernels`). Read once: a decode
    step should not look up the environment on every call."""
    env = os.environ.get("TRITON_INTERPRET")
    if env is not None:
        return env.strip().lower() in ("1", "true", "on", "yes")
    return not torch.cuda.is_available()


@contextlib.contextmanager
def own_kernels():
    """Define tilecraft's kernels (run `@triton.jit`) in the mode `interpreting()` says. Triton reads
    TRITON_INTERPRET when a kernel is decorated, so without CUDA the variable is set for that moment only and
    restored: the process's environment, and other libraries' kernels, are left as they were."""
    old = os.environ.get("TRITON_INTERPRET")
    want = "1" if interpreting() else None
    if old is not None or want is None:  # the user decided (or there is nothing to change)
        yield
        return
    os.environ["TRITON_INTERPRET"] = want
    try:
        yield
    finally:
        os.environ.pop("TRITON_INTERPRET", None)


def cache_root() -> Path:
    """tilecraft's cache directory: $TILECRAFT_CACHE, else ~/.cache/tilecraft (not created here)."""
    return Path(os.environ.get("TILECRAFT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tilecraft"))


def cache_dir() -> Path:
    """Where generated kernel sources live: <cache_root>/kernels/triton-<ver>."""
    d = cache_root() / "kernels" / f"triton-{triton.__version__}"
    d.mkdir(parents=True, exist_ok=True)
    return d


_MODULES: dict[str, object] = {}

PDL_MARK = "# PDL_WAIT"  # where a kernel source wants its grid-dependency wait (default: first thing it does)
_PDL_IMPORT = ("from triton.language.extra.cuda import gdc_launch_dependents as _gdc_launch_dependents, "
               "gdc_wait as _gdc_wait")


@functools.cache
def pdl_active() -> bool:
    """Are kernels launched with programmatic dependent launch (PDL, Hopper and later)? Each kernel then lets the
    next one launch as soon as all its programs have started, and waits for the previous one's results
    (griddepcontrol.wait) before it reads or writes anything the previous kernels touch: kernel N + 1's launch and
    prologue (a quantized GEMM: its weight prefetch) overlap kernel N. TILECRAFT_PDL=1 turns it on (default
    off); never when interpreting or below sm_90."""
    if os.environ.get("TILECRAFT_PDL", "0").strip().lower() not in ("1", "true", "on", "yes") or interpreting():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


def with_pdl(source: str, fn_name: str) -> str | None:
    """`source` with kernel `fn_name` made PDL-aware: `gdc_launch_dependents()` first, `gdc_wait()` at the
    source's `# PDL_WAIT` line (inside that kernel) or else right after the launch call. Only code before the wait
    may run while the previous kernel still does: reads of data no kernel writes (weights) and index math. None
    when the source has no top-level `def fn_name(`."""
    lines = source.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"def {fn_name}(")), None)
    if start is None:  # not a plain top-level kernel: launched without PDL
        return None
    end = start
    while not lines[end].split("#")[0].rstrip().endswith(":"):
        end += 1
    body = next(line for line in lines[end + 1:] if line.strip())
    indent = body[:len(body) - len(body.lstrip())]
    marks = [i for i, line in enumerate(lines) if line.strip() == PDL_MARK and i > end]
    for i in marks:
        lines[i] = lines[i].replace(PDL_MARK, "_gdc_wait()")
    lines[end + 1:end + 1] = [f"{indent}_gdc_launch_dependents()"] + ([] if marks else [f"{indent}_gdc_wait()"])
    head = 0
    while head < len(lines) and lines[head].startswith("from __future__"):
        head += 1
    lines.insert(head, _PDL_IMPORT)
    return "\n".join(lines) + "\n"


def load_source(source: str, fn_name: str):
    """Write `source` to the kernel cache (named by its hash) and import it; returns the jitted function (with
    PDL, see `pdl_active`, the PDL-aware source's, marked `_tilecraft_pdl` for its launches)."""
    pdl = with_pdl(source, fn_name) if pdl_active() else None
    source = pdl or source
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    mod = _MODULES.get(digest)
    if mod is None:
        path = cache_dir() / f"k_{digest}.py"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)  # atomic: concurrent compiles never see half a file
        spec = importlib.util.spec_from_file_location(f"tilecraft_kernels.k_{digest}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        with own_kernels():
            spec.loader.exec_module(mod)
        _MODULES[digest] = mod
    fn = getattr(mod, fn_name)
    if pdl:
        fn._tilecraft_pdl = True
    return fn


@dataclass
class ArgSpec:
    """One tensor argument of a kernel: the buffer passed (shape, strides, dtype) and whether it is written."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: torch.dtype
    is_output: bool = False

    def allocate(self, device, gen: torch.Generator | None = None) -> torch.Tensor:
        t = torch.empty_strided(self.shape, self.strides, dtype=self.dtype, device=device)
        if self.is_output:
            return t.zero_()
        if self.dtype == torch.bool:
            return t.copy_(torch.rand(self.shape, generator=gen) > 0.5)
        if self.dtype.is_floating_point:
            return t.copy_(torch.randn(self.shape, generator=gen))
        return t.copy_(torch.randint(0, 4, self.shape, generator=gen))


def launch_hooks_active() -> bool:
    """Has anyone registered a Triton launch hook (profilers do)? Triton 3.6 keeps an empty `HookChain` there,
    never None, so an empty chain counts as no hook."""
    rt = triton.knobs.runtime
    return any(h is not None and getattr(h, "calls", True) for h in (rt.launch_enter_hook, rt.launch_exit_hook))


class FastLaunch:
    """`fn[grid](*args, **kwargs, **opts)`, with repeat launches going straight to the compiled kernel: Triton's
    JIT re-binds and re-specializes every argument on each call (tens of µs of Python, as long as a small
    kernel itself). The cache key holds what Triton specializes on: each pointer's 16-byte alignment, every
    other argument's value, the grid and the launch options. Anything unexpected (launch hooks, another Triton
    API) turns it off for good and the JIT launch is used."""

    def __init__(self):
        self.cache: dict = {}
        self.enabled = True
        self._kwargs, self._tail = None, []

    def launch(self, fn, grid, args, kwargs: dict, opts: dict):
        if kwargs is not self._kwargs:  # the same constexpr dict launch after launch: its values, in order, once
            self._kwargs, self._tail = kwargs, [kwargs[n] for n in fn.arg_names[len(args):]]
        full = list(args) + self._tail  # signature order
        key = None
        if self.enabled and full and isinstance(full[0], torch.Tensor) and full[0].is_cuda:
            key = (tuple(grid), tuple(opts.items()),
                   tuple(a.data_ptr() % 16 == 0 if isinstance(a, torch.Tensor) else a for a in full))
            compiled = self.cache.get(key)
            if compiled is not None:
                try:
                    if launch_hooks_active():
                        raise RuntimeError("launch hooks are set")
                    g = tuple(grid) + (1,) * (3 - len(grid))
                    stream = torch._C._cuda_getCurrentRawStream(full[0].device.index)
                    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None,
                                 None, None, *full)
                    return
                except Exception:  # noqa: BLE001 - never worse than the JIT launch
                    self.enabled, self.cache = False, {}
        compiled = fn[grid](*args, **kwargs, **opts)
        if key is not None and self.enabled and hasattr(compiled, "packed_metadata"):
            self.cache[key] = compiled


@dataclass
class Kernel:
    """A generated kernel: Triton source + how to launch it for a config."""

    name: str
    template: str  # "pointwise" | "reduction" | "matmul" | ...
    source: str
    fn_name: str
    args: list[ArgSpec]
    grid: Callable[[dict], tuple]  # launch grid for a config
    shapes: dict[str, int]  # the template's problem sizes, e.g. {"M":..,"N":..,"K":..}
    dtype: torch.dtype  # the main input dtype
    config: dict = field(default_factory=dict)  # the config launches use unless told otherwise
    default: dict = field(default_factory=dict)  # the heuristic config
    info: dict = field(default_factory=dict)  # anything the template wants to remember (e.g. fused ops)
    _fn: object = None
    _fast: FastLaunch = field(default_factory=FastLaunch, repr=False)
    _plans: dict = field(default_factory=dict, repr=False)  # config items -> what a launch with it passes

    @property
    def key(self) -> str:
        """Stable hash of the kernel's template and source (the source bakes in the fused IR and shapes)."""
        return hashlib.sha256(f"{self.template}\n{self.source}".encode()).hexdigest()[:16]

    @property
    def out_positions(self) -> list[int]:
        return [i for i, a in enumerate(self.args) if a.is_output]

    def default_config(self) -> dict:
        return dict(self.default)

    @property
    def fn(self):
        if self._fn is None:
            self._fn = load_source(self.source, self.fn_name)
        return self._fn

    def plan(self, config: dict) -> tuple:
        """(constexprs, launch options, grid) of a config, worked out once per config, not on every launch."""
        key = tuple(config.items())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self.make_plan(config)
        return plan

    def make_plan(self, config: dict) -> tuple:
        consts = {k: v for k, v in config.items() if k not in LAUNCH_KEYS}
        opts = {k: v for k, v in config.items() if k in LAUNCH_KEYS}
        if pdl_active() and getattr(self.fn, "_tilecraft_pdl", False):  # a PDL-aware source (load_source)
            opts["launch_pdl"] = True
        return consts, opts, self.grid(config)

    def aten_plan(self):
        """The ATen-backend plan the current config runs (matmul and qmatmul kernels with `BACKEND="aten"` have
        one: cuBLAS plus generated epilogue kernels), else None."""
        plan = getattr(self, "aten", None)
        return plan if plan is not None and self.config.get("BACKEND") == "aten" else None

    def compile_units(self) -> list["Kernel"]:
        """The generated kernels a launch with the current config runs (compiled ahead by codegen/compile.py):
        this one, or its ATen plan's."""
        plan = self.aten_plan()
        return plan.kernels() if plan is not None else [self]

    def donation(self) -> tuple[int, int] | None:
        """(output position, input position) when the launch may write its output into that input's buffer (the
        runtime decides whether the input is dead by then): a residual add folded into an ATen plan's cuBLAS
        call, which then runs as an in-place `addmm_` with no copy of the residual into a fresh output."""
        return getattr(self.aten_plan(), "donation", None)

    def launches_nothing(self, config: dict | None = None) -> bool:
        """Is a launch with this config a no-op: an empty grid, or an empty tensor argument?"""
        grid = self.grid(self.config if config is None else config)
        return not all(n > 0 for n in grid) or any(len(a.shape) and 0 in a.shape for a in self.args)

    def launch(self, args: list[torch.Tensor], config: dict | None = None) -> None:
        consts, opts, grid = self.plan(self.config if config is None else config)
        self._fast.launch(self.fn, grid, args, consts, opts)

    def __getstate__(self):  # the jitted function and compiled handles stay in this process
        return {**self.__dict__, "_fn": None, "_fast": FastLaunch(), "_plans": {}}

    def make_args(self, device="cpu", seed: int = 0) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return [a.allocate(device, gen) for a in self.args]

    def describe(self) -> str:
        shapes = ", ".join(f"{k}={v}" for k, v in self.shapes.items())
        fused = self.info.get("ops")
        return f"{self.template} ({shapes}; {str(self.dtype).replace('torch.', '')})" + (
            f" fuses {fused}" if fused else "") + f" config {self.config}"
