"""Runtimes for a compiled graph: generated kernels (KernelProgram) or the reference interpreter."""
from __future__ import annotations

import functools
import logging
import sys

import torch
from torch._logging import LazyString

from ..ir import Graph, Node, Value, base_value, interpret, is_view
from ..ir.interpreter import run_node
from ..logs import configs_log, describe_error, fusion_log, kernels_log
from ..passes.fusion import Group, format_groups, partition

log = logging.getLogger("tilecraft")


class InterpretedProgram:
    """Runs the IR with each op's torch reference (used when codegen is off)."""

    kernels: list = []

    def __init__(self, graph: Graph):
        self.graph = graph

    def __call__(self, *args):
        return interpret(self.graph, list(args))

    def explain(self) -> str:
        return "---- runtime ----\nreference interpreter (no generated kernels)"


class KernelStep:
    def __init__(self, group: Group, kernel, values: list[Value]):
        self.group, self.kernel, self.values = group, kernel, values
        self.outputs = [v for v, a in zip(values, kernel.args) if a.is_output]
        self.failed = False
        self.plan = None  # what each launch needs, worked out on the first one

    @property
    def nodes(self) -> list[Node]:
        return self.group.nodes


class TorchStep:
    def __init__(self, node: Node):
        self.node = node

    @property
    def nodes(self) -> list[Node]:
        return [self.node]


def on_cuda(args) -> bool:
    """Are all tensor arguments on a CUDA device (so the launch sequence can be a CUDA graph)?"""
    return bool(args) and all(t.is_cuda for t in args if isinstance(t, torch.Tensor))


MAX_GRAPHS = 3  # CUDA graph instances per program (see KernelProgram._replay)


class _GraphInstance:
    """One captured CUDA graph of a program, with its input and output buffers."""

    def __init__(self, graph, static_in, static_out, copy_in, clone_out, direct=False):
        self.graph, self.static_in, self.static_out = graph, static_in, static_out
        self.copy_in = copy_in  # argument positions copied into static_in before each replay
        # direct: captured on the caller's own input tensors (held here, so their memory stays theirs); replayed
        # only while the caller passes tensors at those addresses with those strides, with no copy in
        self.direct = direct
        self.clone_out = clone_out  # output positions that alias an input buffer: always cloned
        self.refs = self._counts()  # reference counts while only this instance holds the outputs

    def _counts(self):
        return [(sys.getrefcount(t), torch._C._storage_Use_Count(t.untyped_storage()._cdata))
                if isinstance(t, torch.Tensor) else None for t in self.static_out]

    def free(self) -> bool:
        """Does nobody but this instance hold the outputs of its last replay?"""
        return self._counts() == self.refs

    def fits(self, args) -> bool:
        """Can this instance replay for `args`? (Static inputs were checked by the program's graph key.)"""
        return not self.direct or all(args[i].data_ptr() == self.static_in[i].data_ptr()
                                      and args[i].stride() == self.static_in[i].stride() for i in self.copy_in)

    @classmethod
    def capture(cls, prog, args, static: set, warm: bool, direct: bool = False):
        static_in = [a if direct or i in static or not isinstance(a, torch.Tensor) else a.clone()
                     for i, a in enumerate(args)]
        if warm:  # compile every kernel and settle every lazy plan before capture
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    prog.run(*static_in)
            torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = prog.run(*static_in)
        ins = {t.untyped_storage().data_ptr() for i, t in enumerate(static_in)
               if isinstance(t, torch.Tensor) and i not in static}
        clone_out = {j for j, o in enumerate(static_out)
                     if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() in ins}
        copy_in = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and i not in static]
        return cls(graph, static_in, static_out, copy_in, clone_out, direct)

    def replay(self, args) -> list:
        for i in () if self.direct else self.copy_in:
            self.static_in[i].copy_(args[i])
        self.graph.replay()
        return [o.clone() if j in self.clone_out else o for j, o in enumerate(self.static_out)]


class KernelProgram:
    """Launches one kernel per fused group in order; ops without a template run through torch."""

    def __init__(self, graph: Graph, options=None):
        from ..codegen import build_kernel
        from ..codegen.compile import compile_kernels

        self.graph, self.options = graph, options
        self._static_inputs: tuple[int, ...] = ()  # sorted argument indices of parameters and buffers (backend)
        self._static_steps: set[int] | None = None  # steps computed from static inputs alone (see _plan_static)
        self._cache_key, self._cache = None, {}
        # groups whose kernel failed to generate, compile or launch, as (stage "codegen" | "compile" | "launch",
        # group or kernel, error): they run through torch; the fuzzer and tests read this, not the warnings
        self.fell_back: list[tuple[str, str, str]] = []
        self.inference = False  # set by the backend for graphs that run without autograd (CUDA graphs by default)
        self._graphs: list[_GraphInstance] = []  # captured CUDA graphs (see _replay)
        self._graph_key, self._graph_refused = None, False
        self._last_ptrs = None  # (address, strides) of the last call's non-static tensor inputs (see _replay)
        self._arg_positions: dict[int, tuple[list[int], list[int]]] = {}  # see _positions
        self._lean, self._lean_source = None, None  # the generated wrapper (see run) and its source
        self.copies: set = set()  # (kernel, shape, strides given, strides expected) of inputs copied to fit
        self._configs: dict = {}  # select_config's answers, by what it reads of a kernel (see _choose_config)
        self.groups = partition(graph)
        group_of = {id(n): g for g in self.groups for n in g.nodes}
        needed: dict[int, list[Value]] = {id(g): [] for g in self.groups}

        def need(v: Value):
            """v must exist as a tensor at run time."""
            p = v.producer
            if is_view(p):
                need(p.inputs[0])
            elif p is not None:
                g = group_of[id(p)]
                if g.kind != "torch" and not any(v is w for w in needed[id(g)]):
                    needed[id(g)].append(v)

        for g in self.groups:
            ids = {id(n) for n in g.nodes}
            for n in g.nodes:
                for v in n.input_values():
                    if g.kind == "torch":
                        need(v)
                        continue
                    while is_view(v.producer) and id(v.producer) not in ids:
                        v = v.producer.inputs[0]
                    if v.producer is None or id(v.producer) not in ids:
                        need(v)
        for v in graph.outputs:
            if isinstance(v, Value):
                need(v)

        self.steps: list = []
        self.kernels = []
        if getattr(options, "mode", "default") == "max-autotune":  # its database exists before configs are read
            from ..tuner.tune import autotune_db

            autotune_db(options)
        for i, g in enumerate(self.groups):
            outs = needed[id(g)]
            kernel = None
            if g.kind != "torch" and outs:
                try:
                    kernel, values = build_kernel(g, outs, f"k{i}_{g.kind}_{'_'.join(dict.fromkeys(n.op for n in g.nodes))}"[:60],
                                                  options)
                except Exception as e:  # noqa: BLE001 - any codegen gap falls back to torch for this group
                    log.warning("tilecraft: group %d (%s) runs through torch: %s", i, g.describe(), e)
                    self.fell_back.append(("codegen", g.describe(), f"{type(e).__name__}: {e}"))
            if kernel is not None:
                self._choose_config(kernel)
                self.steps.append(KernelStep(g, kernel, values))
                self.kernels.append(kernel)
            elif g.kind == "torch" or outs:
                self.steps.extend(TorchStep(n) for n in g.nodes)
        # max-autotune tunes on the first call: the backend compiles under fake tensors, tuning needs real ones
        self._autotune = getattr(options, "mode", "default") == "max-autotune"
        self._log()
        self._plan_frees()
        # distinct kernels compile concurrently now, not one by one at their first launches (no-op on the CPU)
        failed = compile_kernels(self.kernels, {v.type.device for v in graph.inputs})
        for s in self.steps:
            if isinstance(s, KernelStep) and id(s.kernel) in failed:
                s.failed = True
                self.fell_back.append(("compile", s.kernel.name, describe_error(failed[id(s.kernel)])))

    def _autotune_now(self) -> None:
        from ..tuner.tune import autotune_missing

        self._autotune = False
        for k in autotune_missing(self.kernels, self.options):
            configs_log.debug("tilecraft kernel %s: config %s from %s", k.name, k.config, k.info["config_source"])

    def _log(self) -> None:
        """The `tilecraft_fusion`, `tilecraft_kernels` and `tilecraft_configs` artifacts (see tilecraft/logs.py)."""
        fusion_log.debug("tilecraft fused groups:\n%s", LazyString(format_groups, self.groups))
        for k in self.kernels:
            kernels_log.debug("tilecraft kernel %s (%s):\n%s", k.name, k.template, k.source)
            configs_log.debug("tilecraft kernel %s: config %s from %s", k.name, k.config,
                              k.info.get("config_source", "default"))

    def _choose_config(self, kernel):
        """A tuned config from the schedule database when one matches, else the template's default."""
        from ..tuner import select_config

        schedules = getattr(self.options, "schedules", None)
        # identical layers give kernels alike in all select_config reads: look each up once per program (each
        # lookup opens every schedule database)
        key = (kernel.template, kernel.key, tuple(sorted(kernel.shapes.items())), kernel.dtype,
               tuple(sorted(kernel.default_config().items())),
               tuple((a.shape, a.strides, a.dtype, a.is_output) for a in kernel.args))
        if key not in self._configs:
            self._configs[key] = select_config(kernel, schedules)
        config, source = self._configs[key]
        kernel.config = dict(config)
        kernel.info["config_source"] = source

    def _plan_frees(self):
        """Drop each intermediate after its last use, so the allocator reuses its memory."""
        last: dict[int, int] = {}
        for i, s in enumerate(self.steps):
            vals = s.values if isinstance(s, KernelStep) else s.node.input_values()
            for v in vals:
                while True:
                    last[id(v)] = i
                    if not is_view(v.producer):
                        break
                    v = v.producer.inputs[0]
        keep = set()
        for v in self.graph.outputs:
            while isinstance(v, Value):
                keep.add(id(v))
                v = v.producer.inputs[0] if is_view(v.producer) else None
        self.frees: list[list[int]] = [[] for _ in self.steps]
        for vid, i in last.items():
            if vid not in keep:
                self.frees[i].append(vid)

    def __call__(self, *args):
        if self._autotune:
            self._autotune_now()
        mode = getattr(self.options, "cuda_graphs", None)
        if mode is not False and not self._graph_refused:
            cuda = on_cuda(args)
            if cuda and (mode or self.inference):
                try:
                    return self._replay(args)
                except Exception as e:  # noqa: BLE001 - capture is impossible (a host sync, say): run plainly
                    self._graph_refused = True
                    self._graphs = []
                    log.warning("tilecraft: CUDA graph capture failed (%s); running the kernels one by one",
                                describe_error(e))
            elif mode and not getattr(self, "_said_no_cuda", False):
                self._said_no_cuda = True
                log.warning("tilecraft: cuda_graphs=True needs CUDA inputs; running the kernels one by one")
        return self.run(*args)

    def _replay(self, args):
        """Replay the launch sequence as a CUDA graph, capturing it on first use. Static inputs (parameters,
        buffers) are read in place (a moved or modified one means a new capture); other inputs are copied in.

        Outputs are the graph's own buffers, not copies. A caller must never see them change, so a replay only
        reuses an instance whose previous outputs nobody holds any more (no reference to the tensors or their
        storage besides ours); otherwise another instance is captured (a decode loop that keeps the last
        logits alternates between two); when `MAX_GRAPHS` instances are all held, the call runs without a graph.

        Copying the inputs in costs GPU time (as much as the program's own kernels for a memory-bound program on
        large inputs). A caller that passes the same input tensors again (a benchmark loop, static input buffers
        refilled in place) gets a "direct" instance captured on those tensors: it holds them and replays with no
        copy while the caller's inputs have the same addresses and strides (in-place changes are seen, as eager
        sees them)."""
        static, dynamic = self._positions(args)
        key = self._static_key(args) or tuple(args[i].data_ptr() for i in static)
        if key != self._graph_key:
            self._graphs, self._graph_key = [], key
        ptrs = tuple((args[i].data_ptr(), args[i].stride()) for i in dynamic)
        again, self._last_ptrs = ptrs == self._last_ptrs, ptrs
        inst = next((g for g in self._graphs if g.free() and g.fits(args) and (g.direct or not again)), None)
        if inst is None and again:  # the same inputs twice: a direct instance, in place of a free one if full
            spare = next((g for g in self._graphs if g.free()), None)
            if len(self._graphs) < MAX_GRAPHS or spare is not None:
                if len(self._graphs) >= MAX_GRAPHS:
                    self._graphs.remove(spare)
                inst = _GraphInstance.capture(self, args, set(static), warm=not self._graphs, direct=True)
                self._graphs.append(inst)
        if inst is None and len(self._graphs) >= MAX_GRAPHS:
            return self.run(*args)  # every instance's outputs are held: fresh buffers, kernels one by one
        if inst is None:
            inst = _GraphInstance.capture(self, args, set(static), warm=not self._graphs)
            self._graphs.append(inst)
        return inst.replay(args)

    def _plan_static(self):
        """Steps whose inputs all derive from parameters, buffers, constants or nothing (folded batch-norm weights,
        a weight's layout change, position tables): their results are cached across calls, and recomputed only
        when a static input moves or is modified in place (its version counter changes)."""
        static = {id(self.graph.inputs[i]) for i in self.static_inputs if i < len(self.graph.inputs)}
        static.update(id(n.out) for n in self.graph.nodes if n.op == "constant")
        outs = {id(v) for v in self.graph.outputs if isinstance(v, Value)}

        def base(v):
            while is_view(v.producer):
                v = v.producer.inputs[0]
            return v

        self._static_steps = set()
        for i, step in enumerate(self.steps):
            nodes = step.nodes
            produced = [o for n in nodes for o in n.outputs]
            mine = {id(o) for o in produced}  # (a view of the step's own value read inside it is no input)
            ins = [b for n in nodes for b in map(base, n.input_values()) if id(b) not in mine]
            # (a step with no inputs at all creates its values: arange, full, ... are deterministic, so RoPE's
            # positions and tables and a causal mask built from them are computed once too)
            if (all(id(v) in static for v in ins) and not any(n.op == "torch_op" for n in nodes)
                    and not any(id(o) in outs for o in produced)):
                self._static_steps.add(i)
                static.update(id(o) for o in produced)

    @property
    def static_inputs(self) -> tuple[int, ...]:
        return self._static_inputs

    @static_inputs.setter
    def static_inputs(self, value) -> None:
        self._static_inputs, self._arg_positions = tuple(value), {}

    def _positions(self, args) -> tuple[list[int], list[int]]:
        """(positions of the static tensor arguments, of the other tensor arguments), worked out once per argument
        count: a replay's host cost is on every call of a decode loop, and a quantized model passes ~200
        parameters (testing each position against a list of them cost ~0.15 ms per call)."""
        got = self._arg_positions.get(len(args))
        if got is None:
            fixed = set(self.static_inputs)
            tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
            got = self._arg_positions[len(args)] = ([i for i in tensors if i in fixed],
                                                    [i for i in tensors if i not in fixed])
        return got

    def _static_key(self, args):
        try:
            return tuple((args[i].data_ptr(), args[i]._version) for i in self._positions(args)[0])
        except RuntimeError:  # inference-mode tensors have no version counter: nothing is cached
            return None

    @staticmethod
    def _get(env: dict, v):
        """The tensor of value v in this call (views of computed values made on demand, through torch)."""
        if not isinstance(v, Value):
            return v
        t = env.get(id(v))
        if t is None:
            p = v.producer
            if not is_view(p):
                raise RuntimeError(f"tilecraft runtime: %{v.name} was never computed")
            t = run_node(p, {id(x): KernelProgram._get(env, x) for x in p.input_values()})[0]
            env[id(v)] = t
        return t

    def run(self, *args):
        """Run the program once without a CUDA graph: through the generated lean wrapper (compiler/wrapper.py)
        once a first plain run has settled what is static, else step by step (`run_steps`)."""
        if self._lean is not None:
            return self._lean(*args)
        out = self.run_steps(*args)
        if self._lean is None and self._lean_source is None:
            self._make_lean(args)
        return out

    def _make_lean(self, args):
        from .wrapper import generate, lean_enabled

        if not lean_enabled(self.options):
            self._lean_source = ""
            return
        try:
            self._lean_source, self._lean = generate(self, args)
        except Exception as e:  # noqa: BLE001 - the step-by-step path stays
            self._lean_source = ""
            log.warning("tilecraft: no lean launch wrapper (%s: %s); launching step by step", type(e).__name__, e)

    def _lean_failed(self, i: int, e: Exception, args):
        """Kernel step i failed at launch in the lean wrapper: it runs through torch from now on, the wrapper is
        generated again on the next call, and this call is redone step by step."""
        self._kernel_failed(self.steps[i], e)
        self._lean, self._lean_source = None, None
        return self.run(*args)

    def run_steps(self, *args):
        """Launch every step in order (no CUDA graph); steps on static inputs alone reuse their last results."""
        env: dict[int, torch.Tensor] = {id(v): t for v, t in zip(self.graph.inputs, args)}
        if self._static_steps is None:
            self._plan_static()
        key = self._static_key(args) if self._static_steps else None
        cached = key is not None and key == self._cache_key
        if cached:
            env.update(self._cache)
        elif key is not None:
            self._cache_key, self._cache = None, {}

        # a bound partial, not a recursive closure: a closure that calls itself is a reference cycle, so every
        # call would leave garbage for the cyclic GC, whose full passes take milliseconds in a big process
        get = functools.partial(self._get, env)
        for i, step in enumerate(self.steps):
            static = i in self._static_steps
            if not (cached and static):
                if isinstance(step, KernelStep) and not step.failed:
                    self._launch(step, get, env)
                if isinstance(step, TorchStep) or step.failed:  # a kernel that just failed falls through here
                    for n in step.nodes:
                        outs = run_node(n, {id(x): get(x) for x in n.input_values()})
                        for o, t in zip(n.outputs, outs):
                            env[id(o)] = t
                if key is not None and static:
                    self._cache.update({id(o): env[id(o)] for n in step.nodes for o in n.outputs if id(o) in env})
            for vid in self.frees[i]:
                env.pop(vid, None)
        if key is not None and not cached:
            self._cache_key = key
        return [get(v) for v in self.graph.outputs]

    def _launch(self, step: KernelStep, get, env):
        k = step.kernel
        if step.plan is None:  # shapes are static: work out once what each call only repeats
            empty = not all(n > 0 for n in k.grid(k.config)) or any(
                len(a.shape) and 0 in a.shape for a in k.args)
            step.plan = (empty, [(v, a, any(v is o for o in step.outputs)) for v, a in zip(step.values, k.args)],
                         self._donor(step))
        empty, items, donor = step.plan
        tensors, device = [], None
        for v, spec, _ in items:
            if spec.is_output:
                tensors.append(None)
                continue
            t = get(v)
            device = device or t.device
            if t.stride() != spec.strides and any(
                    a != b for a, b, n in zip(t.stride(), spec.strides, spec.shape) if n != 1):
                if len(self.copies) < 64:  # an input laid out otherwise than the kernel was generated for
                    self.copies.add((k.name, spec.shape, tuple(t.stride()), spec.strides))
                t = torch.empty_strided(spec.shape, spec.strides, dtype=spec.dtype, device=t.device).copy_(t)
            tensors.append(t)
        # outputs are allocated where the inputs live (an output may be argument 0: the inputs come first)
        if device is None:
            device = self.graph.inputs[0].type.device if self.graph.inputs else "cpu"
        for i, (_, spec, _) in enumerate(items):
            if spec.is_output:
                tensors[i] = torch.empty_strided(spec.shape, spec.strides, dtype=spec.dtype, device=device) \
                    if donor is None or donor[0] != i or not tensors[donor[1]].is_contiguous() \
                    else tensors[donor[1]].view(spec.shape)
        try:
            if not empty:
                k.launch(tensors)
        except Exception as e:  # noqa: BLE001 - never crash on a kernel: fall back to torch, say so once
            self._kernel_failed(step, e)
            return
        for (v, _, keep), t in zip(items, tensors):
            if keep:
                env[id(v)] = t

    def _donor(self, step: KernelStep) -> tuple[int, int] | None:
        """(output, input) positions when this step's output may take over the input's buffer (see the kernel's
        `donation`): the input is a generated kernel's fresh result, not a graph input or output, not cached
        across calls (a static step's), read by no torch op (whose result could alias it) and by nothing after
        this step."""
        d = step.kernel.donation()
        if d is None:
            return None
        v, i = step.values[d[1]], self.steps.index(step)
        made = [j for j, s in enumerate(self.steps) if isinstance(s, KernelStep) and not s.failed and
                any(v is o for o in s.outputs)]
        torch_read = any(base_value(x) is v for s in self.steps if not isinstance(s, KernelStep) or s.failed
                         for n in s.nodes for x in n.input_values())
        if len(made) != 1 or made[0] in (self._static_steps or ()) or torch_read or id(v) not in self.frees[i]:
            return None
        return d

    def _kernel_failed(self, step: KernelStep, e: BaseException) -> None:
        """A kernel failed at launch: its ops run through torch from now on; recorded and said once."""
        step.failed = True
        why = describe_error(e)
        self.fell_back.append(("launch", step.kernel.name, why))
        log.warning("tilecraft: kernel %s failed (%s); its ops run through torch from now on", step.kernel.name, why)

    def torch_ops(self) -> list[str]:
        """The ops that run through torch: template-less ones and those of groups that fell back."""
        return [n.op for s in self.steps if isinstance(s, TorchStep) or s.failed for n in s.nodes]

    def explain(self) -> str:
        parts = ["---- fused groups ----", format_groups(self.groups), "---- kernels ----"]
        for k in self.kernels:
            parts.append(f"# {k.name}: {k.describe()}\n{k.source}")
        parts += ["---- launch wrapper ----", self._lean_source or (
            "(generated after the first call)" if self._lean_source is None else "(off: launching step by step)")]
        return "\n".join(parts)


def build_kernel_program(graph: Graph, options):
    return KernelProgram(graph, options)
