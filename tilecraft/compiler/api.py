"""Public entry points: `tilecraft.compile`, `tilecraft.explain`, and the `torch.compile` backend."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch._dynamo
from torch._decomp import core_aten_decompositions
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func
from torch._subclasses.fake_tensor import unset_fake_temporarily

from ..ir import Graph
from ..passes import PassTrace, default_passes, run_passes
from ..logs import graphs_log
from .capture import CaptureError, import_fx

log = logging.getLogger("tilecraft")


@dataclass
class Options:
    """What `tilecraft.compile` takes besides the model (see README for each)."""

    fullgraph: bool = False  # raise on a graph break instead of splitting the program
    codegen: bool = True  # generate Triton kernels; False runs the IR through the reference interpreter
    schedules: str | None = None  # schedule database to take tuned kernel configs from
    cuda_graphs: bool | None = None  # replay the launch sequence as a CUDA graph; None: for inference on CUDA
    lean_launch: bool | None = None  # a generated straight-line wrapper after the first call (compiler/wrapper.py);
    # None: TILECRAFT_LEAN_LAUNCH=1 turns it on (off by default until its CUDA launcher is measured on a GPU)
    channels_last: bool | None = None  # run convolutions in NHWC; None: decide (fp16/bf16 convs on CUDA)
    quantize: str | None = None  # a quantization scheme, applied to a copy before capture (tilecraft.quantize)
    matmul: str = "auto"  # GEMM backend per matmul group: "auto" (schedule DB, else cuBLAS on a GPU), "triton", "aten"
    verify: bool = True  # verify the IR after every pass
    passes: list | None = None  # override the pass pipeline (list of (name, fn))
    dynamic: bool | None = None  # as torch.compile's: None = static first, symbolic sizes once a size changes
    mode: str = "default"  # "default" | "max-autotune" (tune kernels the schedule DB lacks) | "reduce-overhead"
    autotune_seconds: float = 60.0  # mode="max-autotune": time budget for tuning all of a graph's kernels

    def __post_init__(self):
        if self.matmul not in ("auto", "triton", "aten"):
            raise ValueError(f"tilecraft.compile(matmul={self.matmul!r}): expected 'auto', 'triton' or 'aten'")

    @classmethod
    def make(cls, **kw) -> "Options":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kw) - names)
        if unknown:
            raise TypeError(f"tilecraft.compile got unknown option(s) {unknown}; known: {sorted(names)}")
        mode = kw.get("mode") or "default"
        if mode not in MODES:
            raise ValueError(f"tilecraft: unknown mode {mode!r}; known modes: {', '.join(MODES)}")
        kw["mode"] = mode
        if mode == "reduce-overhead" and kw.get("cuda_graphs") is None:  # as Inductor's: CUDA graphs
            kw["cuda_graphs"] = True
        return cls(**kw)


MODES = ("default", "max-autotune", "reduce-overhead")


@dataclass
class GraphRecord:
    """What was compiled for one captured graph."""

    graph: Graph
    ops: dict[str, int]
    fallbacks: list[str]
    seconds: float
    trace: PassTrace
    program: Any = None  # the runtime object (kernels, buffers)
    error: str | None = None  # set when the whole graph fell back to torch

    @property
    def kernels(self) -> list:
        return list(getattr(self.program, "kernels", []) or [])


@dataclass
class CompileReport:
    graphs: list[GraphRecord] = field(default_factory=list)
    dynamo_graphs: int = 0  # graphs Dynamo handed to the backend (a dynamic-shape graph counts once)

    def fell_back(self) -> list[tuple[str, str, str]]:
        """What should have compiled but runs through torch, as (stage, what, why): "graph" (a whole graph),
        "import" (an op the importer could not type), "codegen" / "compile" / "launch" (a group whose kernel
        failed to generate, compile or launch; read it after a call, launches fail at run time)."""
        out = []
        for r in self.graphs:
            if r.error:
                out.append(("graph", "", r.error))
            out += [("import", f, "") for f in r.fallbacks]
            out += list(getattr(r.program, "fell_back", ()))
        return out

    def summary(self) -> str:
        lines = []
        for i, r in enumerate(self.graphs):
            if r.error:
                lines.append(f"graph {i}: ran through torch as a whole ({r.error})")
                continue
            ops = ", ".join(f"{k}x{v}" for k, v in sorted(r.ops.items(), key=lambda kv: (-kv[1], kv[0])))
            lines.append(f"graph {i}: {sum(r.ops.values())} IR nodes, {len(r.kernels)} kernels, "
                         f"compiled in {r.seconds:.2f}s")
            lines.append(f"  ops: {ops}")
            if r.fallbacks:
                lines.append(f"  ran through torch: {', '.join(sorted(set(r.fallbacks)))}")
            for k in r.kernels:
                lines.append(f"  kernel {k.name}: {k.describe()}")
        return "\n".join(lines) or "nothing compiled yet (call the model first)"


def compile_graph(gm: torch.fx.GraphModule, options: Options, report: CompileReport):
    """Compile one ATen FX graph to a callable taking and returning flat lists of tensors."""
    t0 = time.perf_counter()
    trace = PassTrace()
    try:
        # AOT calls its compiler under its FakeTensorMode: every torch call of ours (type inference on meta
        # tensors, dtype promotion, ...) would go through fake-tensor dispatch, ~200x slower; we need real tensors
        with unset_fake_temporarily():
            graph, fallbacks = import_fx(gm)
            passes = options.passes if options.passes is not None else default_passes(options)
            graph = run_passes(graph, passes, trace, check=options.verify)
            if graphs_log.isEnabledFor(logging.DEBUG):
                for name, text, secs in trace.steps:
                    graphs_log.debug("tilecraft IR after %s (%.1f ms):\n%s", name, secs * 1000, text)
                if trace.unchanged:
                    graphs_log.debug("tilecraft passes that changed nothing: %s", ", ".join(trace.unchanged))
            program = build_program(graph, options)
    except CaptureError as e:
        log.warning("tilecraft: %s; this graph runs through torch", e)
        report.graphs.append(GraphRecord(Graph(), {}, [], time.perf_counter() - t0, trace, None, str(e)))
        return gm.forward
    ops: dict[str, int] = {}
    for n in graph.nodes:
        ops[n.op] = ops.get(n.op, 0) + 1
    report.graphs.append(GraphRecord(graph, ops, fallbacks, time.perf_counter() - t0, trace, program))
    return program


def build_program(graph: Graph, options: Options):
    """The runtime for a graph: generated kernels when codegen is on, else the reference interpreter."""
    from .runtime import InterpretedProgram, build_kernel_program

    if options.codegen:
        prog = build_kernel_program(graph, options)
        if prog is not None:
            return prog
    return InterpretedProgram(graph)


def make_backend(options: Options | None = None, report: CompileReport | None = None) -> Callable:
    """A torch.compile backend: Dynamo graph → aot_autograd (core ATen decompositions) → tilecraft.
    A graph with symbolic sizes is compiled per concrete input shape at call time (see `dynamic.py`)."""
    from .dynamic import ShapeSpecialized, is_symbolic

    from ..codegen.compile import prewarm_triton_key

    options = options or Options()
    report = report if report is not None else CompileReport()
    prewarm_triton_key()  # overlaps Dynamo's tracing (see its docstring)

    def fw_compiler(gm, example_inputs, inference: bool = False):
        report.dynamo_graphs += 1
        static: tuple[int, ...] = ()
        try:  # parameters and buffers: a CUDA graph reads them in place
            static = tuple(sorted(torch._guards.TracingContext.get().fw_metadata.static_input_indices))
        except (AttributeError, AssertionError, RuntimeError):
            pass

        def build(g):
            prog = compile_graph(g, options, report)
            if hasattr(prog, "inference"):
                prog.inference = inference
            return prog

        if is_symbolic(gm):
            return make_boxed_func(ShapeSpecialized(gm, build, static))
        prog = build(gm)
        if hasattr(prog, "static_inputs"):
            prog.static_inputs = static
        return make_boxed_func(prog)

    def bw_compiler(gm, example_inputs):  # training: the backward graph runs as captured
        return make_boxed_func(gm.forward)

    def inference_compiler(gm, example_inputs):  # no autograd: outputs need not outlive a CUDA graph replay
        return fw_compiler(gm, example_inputs, inference=True)

    backend = aot_autograd(fw_compiler=fw_compiler, bw_compiler=bw_compiler, inference_compiler=inference_compiler,
                           decompositions=core_aten_decompositions())
    backend.report = report
    return backend


def tilecraft_backend(gm, example_inputs, mode: str | None = None, options: dict | None = None, **kwargs):
    """`torch.compile(model, backend="tilecraft", mode=..., options={...})`: `options` are `tilecraft.compile`'s
    (see `Options`), `mode` is "default", "max-autotune" or "reduce-overhead"."""
    return make_backend(Options.make(**{**(options or {}), **kwargs, "mode": mode}))(gm, example_inputs)


def _register_backend() -> None:
    """Make `backend="tilecraft"` work. An installed tilecraft is found by Dynamo through its
    `torch_dynamo_backends` entry point (as out-of-tree backends are), with no `import tilecraft`; loading that
    entry point imports this module, so registering here as well would be Dynamo's "duplicate name" error.
    Only a checkout used without installing (PYTHONPATH) registers itself on import."""
    from importlib.metadata import entry_points

    from torch._dynamo.backends import registry

    if "tilecraft" in registry._COMPILER_FNS or any(
            ep.name == "tilecraft" for ep in entry_points(group="torch_dynamo_backends")):
        return
    registry.register_backend(tilecraft_backend, name="tilecraft")


_register_backend()


def _describe(obj) -> str:
    return type(obj).__name__ if isinstance(obj, torch.nn.Module) else getattr(obj, "__name__", repr(obj))


class CompiledModel:
    """What `tilecraft.compile` returns: call it like the original; `.report` says what was compiled."""

    def __init__(self, model, options: Options):
        self.model = model
        self.options = options
        self.report = CompileReport()
        self._bound_forms: set = set()
        fn = model.forward if isinstance(model, torch.nn.Module) else model
        try:
            self._signature = inspect.signature(fn)
        except (TypeError, ValueError):
            self._signature = None
        # more recompiles (dtypes, grad modes, argument forms) than Dynamo's default, for this model's calls only
        self._limits = torch._dynamo.config.patch(
            recompile_limit=max(torch._dynamo.config.recompile_limit, 64))
        self._compiled = torch.compile(model, backend=make_backend(options, self.report),
                                       fullgraph=options.fullgraph, dynamic=options.dynamic)
        functools.update_wrapper(self, fn, updated=())

    def __call__(self, *args, **kwargs):
        # whether the arguments bind depends only on how many are positional and which are named: check each
        # form once (binding costs microseconds on every call of a decode loop otherwise)
        form = (len(args), tuple(kwargs))
        if self._signature is not None and form not in self._bound_forms:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TypeError(f"tilecraft.compile({_describe(self.model)}) was called with arguments its "
                                f"signature {self._signature} does not accept: {e}") from None
            self._bound_forms.add(form)
        with self._limits:
            return self._compiled(*args, **kwargs)

    def __getattr__(self, name):  # parameters(), eval(), config, ... of the original model
        if name in ("model", "_compiled", "_signature", "report", "options", "_bound_forms", "_limits"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self):
        return f"tilecraft.CompiledModel({_describe(self.model)})"


def compile(model, **options) -> CompiledModel:  # noqa: A001 - the public name
    """Compile an nn.Module or a function of tensors; the result is called exactly like `model`."""
    if not isinstance(model, torch.nn.Module) and not callable(model):
        raise TypeError(f"tilecraft.compile expects an nn.Module or a callable, got {type(model).__name__}")
    if isinstance(model, type):
        raise TypeError(f"tilecraft.compile expects a model instance, got the class {model.__name__}; "
                        f"instantiate it first")
    opts = Options.make(**options)
    if opts.quantize:
        from ..passes.quantize import quantize

        # a new module tree (the user's model is left unchanged), sibling layers' weights in one tensor each
        model = quantize(model, opts.quantize, sibling_blocks=True)
    return CompiledModel(model, opts)


def explain(model, *inputs, print_result: bool = True, **options) -> str:
    """Compile and run `model` on `inputs`; return (and print) the IR after each pass and the kernels."""
    compiled = model if isinstance(model, CompiledModel) else compile(model, **options)
    compiled(*inputs)
    parts = []
    for i, r in enumerate(compiled.report.graphs):
        parts.append(f"==================== graph {i} ====================")
        if r.error:
            parts.append(f"ran through torch as a whole: {r.error}")
            continue
        for name, text, secs in r.trace.steps:
            parts.append(f"---- after {name} ({secs * 1000:.1f} ms) ----\n{text}")
        if r.trace.unchanged:
            parts.append(f"---- passes that changed nothing: {', '.join(r.trace.unchanged)} ----")
        if r.fallbacks:
            parts.append("---- ran through torch ----\n" + "\n".join(sorted(set(r.fallbacks))))
        if r.program is not None and hasattr(r.program, "explain"):
            parts.append(r.program.explain())
    text = "\n".join(parts)
    if print_result:
        print(text)
    return text
