"""The lean launch path: a straight-line Python `run` generated per KernelProgram (like Inductor's output code).

`KernelProgram.run_steps` interprets its step list on every call: it looks values up in a dict, re-checks
strides, rebuilds argument lists and makes views through the reference interpreter. Once a first plain run has
settled what is static (failed kernels, launch plans), `generate` writes the same sequence as Python source:
one local per value, `del` at its last use (so the allocator reuses buffers exactly as `frees` did), launches
through pre-bound launchers that call Triton's compiled kernel directly, views as `as_strided` with sizes,
strides and offsets worked out once on meta tensors, torch ops as direct calls of their reference with bound
attributes, and the cache of parameter-only steps (`_static_steps`) kept under the same (data_ptr, _version)
key. The wrapper guards on the geometry of the inputs it was generated for; any other call, a launch hook (a
profiler), or a kernel that fails at launch goes back to `run_steps`.
"""
from __future__ import annotations

import functools
import logging
import os

import torch

from ..codegen.kernel import interpreting, launch_hooks_active
from ..ir import Value, is_view
from ..ir.ops import get_op

log = logging.getLogger("tilecraft")


def lean_enabled(options) -> bool:
    """The lean path: the `lean_launch` option when given, else on only with `TILECRAFT_LEAN_LAUNCH=1` (off by
    default until its CUDA launcher has been measured on a GPU: bench/launch_overhead.py)."""
    opt = getattr(options, "lean_launch", None)
    if opt is not None:
        return bool(opt)
    return os.environ.get("TILECRAFT_LEAN_LAUNCH", "0") == "1"


def fast_ok(kernel) -> bool:
    """Is a launch of this kernel just its JIT launch (no launch logic of its own to keep)? Matmul kernels are,
    except the ATen backend and TMA variants (those check operand alignment and set an allocator per launch)."""
    from ..codegen.kernel import Kernel
    from ..codegen.matmul import MatmulKernel

    if type(kernel).launch is Kernel.launch:
        return True
    cfg = kernel.config
    return type(kernel) is MatmulKernel and cfg.get("BACKEND") != "aten" and not (cfg.get("PERSISTENT")
                                                                                  and cfg.get("TMA"))


def fast_launcher(kernel):
    """`launch(stream, *tensors)` for a kernel on CUDA: the first launch per pointer-alignment pattern goes through
    the JIT (compiling if needed), later ones call the compiled kernel with the grid and constexprs bound once
    (what `FastLaunch` does, without rebuilding its key from the config on every call). Anything unexpected
    turns it off for good and the kernel's own `launch` is used (a matmul's persistent-to-grouped fallback)."""
    consts, opts, grid = kernel.plan(kernel.config)
    fn = kernel.fn
    if any(n not in consts for n in fn.arg_names[len(kernel.args):]):  # a constexpr left to its default
        return plain_launcher(kernel)
    tail = tuple(consts[n] for n in fn.arg_names[len(kernel.args):])
    g0, g1, g2 = tuple(grid) + (1,) * (3 - len(grid))
    seen: dict = {}
    state = [True]

    def launch(stream, *ts):
        if state[0]:
            try:
                key = tuple([t.data_ptr() % 16 == 0 for t in ts])
                c = seen.get(key)
                if c is None:
                    c = fn[grid](*ts, **consts, **opts)
                    if hasattr(c, "packed_metadata"):
                        seen[key] = c
                else:
                    c.run(g0, g1, g2, stream, c.function, c.packed_metadata, None, None, None, *ts, *tail)
                return
            except Exception:  # noqa: BLE001 - never worse than the kernel's own launch
                state[0] = False
        kernel.launch(list(ts))

    return launch


def plain_launcher(kernel):
    """`launch(stream, *tensors)` through `Kernel.launch` (the interpreter, CPU tensors)."""
    return lambda stream, *ts: kernel.launch(list(ts))


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _fit(t, shape, strides, dtype):
    """t, copied to the layout a kernel was generated for where its strides differ (run_steps' rule)."""
    if t.stride() != strides and any(a != b for a, b, n in zip(t.stride(), strides, shape) if n != 1):
        return torch.empty_strided(shape, strides, dtype=dtype, device=t.device).copy_(t)
    return t


def _meta(t):
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta") if isinstance(t, torch.Tensor) else t


class _Gen:
    """Writes the source of one program's wrapper; `ns` holds what the source refers to by name."""

    def __init__(self, prog, args):
        from .runtime import KernelStep

        self.prog, self.KernelStep = prog, KernelStep
        self.ns = {"torch": torch, "_empty": torch.empty_strided, "_first": _first, "_fit": _fit,
                   "_hooks": launch_hooks_active, "_prog": prog}
        self.lines: list[str] = []
        self.names: dict[int, str] = {}  # id(Value) -> local name, while defined
        self.meta: dict[int, object] = {}  # id(Value) -> meta tensor of known geometry
        self.root: dict[int, tuple] = {}  # id(Value) -> (root Value, offset is static) for aliases of a root
        self.scoped: list | None = None  # names defined inside a cached step's branch
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        self.cuda = bool(tensors) and tensors[0].is_cuda and not interpreting()
        self.n = 0

    def const(self, x, hint="K"):
        name = f"{hint}{len(self.ns)}"
        self.ns[name] = x
        return name

    def emit(self, line, ind=1):
        self.lines.append("    " * ind + line)

    def define(self, v, name=None):
        name = name or f"v{self.n}"
        self.n += 1
        self.names[id(v)] = name
        if self.scoped is not None:
            self.scoped.append(id(v))
        return name

    def get(self, v, ind) -> str:
        """The expression for value v, emitting its view on first use (as `_get` makes it on demand)."""
        if not isinstance(v, Value):
            return self.const(v)
        name = self.names.get(id(v))
        if name is not None:
            return name
        p = v.producer
        if not is_view(p):
            raise RuntimeError(f"tilecraft wrapper: %{v.name} is never computed")
        base = self.get(p.inputs[0], ind)
        bm, root = self.meta.get(id(p.inputs[0])), self.root.get(id(p.inputs[0]))
        vm = None
        if bm is not None:
            try:
                vm = get_op(p.op).ref(bm, *p.inputs[1:], **p.attrs)
            except Exception:  # noqa: BLE001 - a view meta tensors cannot make: call its reference at run time
                vm = None
        rm = self.meta.get(id(root[0])) if root else None
        name = self.define(v)
        if vm is not None and rm is not None and vm._base is rm and vm.dtype == rm.dtype:
            r = self.names[id(root[0])]
            off = str(vm.storage_offset()) if root[1] else f"{r}.storage_offset() + {vm.storage_offset()}"
            self.emit(f"{name} = {r}.as_strided({tuple(vm.shape)}, {vm.stride()}, {off})", ind)
            self.meta[id(v)], self.root[id(v)] = vm, root
        else:
            ref = self.const(functools.partial(get_op(p.op).ref, **p.attrs), "R")
            rest = "".join(f", {self.get(x, ind)}" for x in p.inputs[1:])
            self.emit(f"{name} = {ref}({base}{rest})", ind)
        return name

    def free(self, vids, ind):
        gone = [self.names.pop(vid) for vid in vids if vid in self.names]
        if gone:
            self.emit(f"del {', '.join(gone)}", ind)

    def kernel_step(self, i, step, ind):
        k = step.kernel
        launch = self.const(fast_launcher(k) if self.cuda and fast_ok(k) else plain_launcher(k), "L")
        names = []
        for v, spec in zip(step.values, k.args):
            if spec.is_output:
                out = self.define(v) if any(v is o for o in step.outputs) else f"t{self.n}"
                self.n += 1
                dt = self.const(spec.dtype, "D")
                self.emit(f"{out} = _empty({spec.shape}, {spec.strides}, dtype={dt}, device=dev)", ind)
                if out.startswith("v"):
                    self.meta[id(v)] = torch.empty_strided(spec.shape, spec.strides, dtype=spec.dtype, device="meta")
                    self.root[id(v)] = (v, True)
                names.append(out)
                continue
            x = self.get(v, ind)
            m = self.meta.get(id(v))
            if m is None:  # geometry known only at run time (a torch op's result): check as run_steps does
                x = f"_fit({x}, {spec.shape}, {spec.strides}, {self.const(spec.dtype, 'D')})"
            elif m.stride() != spec.strides and any(
                    a != b for a, b, n in zip(m.stride(), spec.strides, spec.shape) if n != 1):
                if len(self.prog.copies) < 64:
                    self.prog.copies.add((k.name, spec.shape, tuple(m.stride()), spec.strides))
                x = f"_empty({spec.shape}, {spec.strides}, dtype={self.const(spec.dtype, 'D')}, device=dev).copy_({x})"
            names.append(x)
        if not k.launches_nothing():
            self.emit("try:", ind)
            self.emit(f"{launch}(stream, {', '.join(names)})", ind + 1)
            self.emit("except Exception as e:  # noqa: BLE001", ind)
            self.emit(f"return _prog._lean_failed({i}, e, args)", ind + 1)
        dead = [n for n in names if n.startswith("t") and n[1:].isdigit()]
        if dead:
            self.emit(f"del {', '.join(dead)}", ind)

    def torch_node(self, n, ind):
        ref = get_op(n.op).ref
        ins = [self.get(x, ind) for x in n.inputs]
        single = False
        if len(n.outputs) == 1 and all(self.meta.get(id(x)) is not None for x in n.input_values()):
            try:
                margs = [self.meta[id(x)] if isinstance(x, Value) else x for x in n.inputs]
                single = isinstance(ref(*margs, **n.attrs), torch.Tensor)
            except Exception:  # noqa: BLE001 - meta tensors unsupported: take the generic form
                single = False
        r = self.const(functools.partial(ref, **n.attrs) if n.attrs else ref, "R")
        call = f"{r}({', '.join(ins)})"
        outs = [self.define(o) for o in n.outputs]
        if single:
            self.emit(f"{outs[0]} = {call}", ind)
        elif len(outs) == 1:
            self.emit(f"{outs[0]} = _first({call})", ind)
        else:
            self.emit(f"_o = {call}", ind)
            self.emit(f"{', '.join(outs)} = _o[:{len(outs)}]", ind)

    def step(self, i, step, ind):
        if isinstance(step, self.KernelStep) and not step.failed:
            self.kernel_step(i, step, ind)
        else:
            for n in step.nodes:
                self.torch_node(n, ind)

    def source(self, args) -> str:
        prog, g = self.prog, self.prog.graph
        ins = []
        for j, (v, a) in enumerate(zip(g.inputs, args)):
            ins.append(self.define(v, f"a{j}"))
            if isinstance(a, torch.Tensor):
                self.meta[id(v)], self.root[id(v)] = _meta(a), (v, False)
        self.n = 0
        tensors = [(j, a) for j, a in enumerate(args) if isinstance(a, torch.Tensor)]
        guard = " or ".join(f"a{j}.shape != {tuple(a.shape)} or a{j}.stride() != {a.stride()}"
                            f" or a{j}.dtype != {self.const(a.dtype, 'D')}" for j, a in tensors)
        self.lines = [f"def run({', '.join(ins + ['*_rest'])}):",
                      f"    args = ({''.join(n + ', ' for n in ins)})"]
        self.emit(f"if _rest or {guard or 'False'}:" if not self.cuda else
                  f"if _rest or _hooks() or {guard or 'False'}:")
        self.emit("return _prog.run_steps(*args, *_rest)", 2)
        dev = f"a{tensors[0][0]}.device" if tensors else repr(str(g.inputs[0].type.device) if g.inputs else "cpu")
        self.emit(f"dev = {dev}")
        if tensors:
            self.emit(f"if dev != {self.const(tensors[0][1].device, 'DEV')}:")
            self.emit("return _prog.run_steps(*args, *_rest)", 2)
        self.emit(f"stream = torch._C._cuda_getCurrentRawStream(dev.index)" if self.cuda else "stream = None")
        static = prog._static_steps
        if static:
            keys = "".join(f"(a{i}.data_ptr(), a{i}._version), " for i in prog.static_inputs if i < len(args)
                           and isinstance(args[i], torch.Tensor))
            self.emit("try:")
            self.emit(f"key = ({keys})", 2)
            self.emit("except RuntimeError:  # inference-mode tensors have no version counter: nothing is cached")
            self.emit("key = None", 2)
            self.emit("C = _prog._cache")
            self.emit("cached = key is not None and key == _prog._cache_key")
            self.emit("if key is not None and not cached:")
            self.emit("_prog._cache_key, _prog._cache = None, {}", 2)
            self.emit("C = _prog._cache", 2)
        for i, step in enumerate(prog.steps):
            self.emit(f"# step {i}: {step.kernel.name if isinstance(step, self.KernelStep) and not step.failed else ', '.join(n.op for n in step.nodes)}")
            if i in static:
                self.scoped = []
                self.emit("if not cached:")
                self.step(i, step, 2)
                outs = [o for n in step.nodes for o in n.outputs if id(o) in self.names]
                # views made inside the branch exist only there: drop them, later uses make them again
                self.free([vid for vid in self.scoped if not any(vid == id(o) for o in outs)], 2)
                self.scoped = None
                if outs:
                    self.emit("if key is not None:", 2)
                    for o in outs:
                        self.emit(f"C[{id(o)}] = {self.names[id(o)]}", 3)
                    self.emit("else:")
                    for o in outs:
                        self.emit(f"{self.names[id(o)]} = C[{id(o)}]", 2)
            else:
                self.step(i, step, 1)
            self.free(prog.frees[i], 1)
        if static:
            self.emit("if key is not None and not cached:")
            self.emit("_prog._cache_key = key", 2)
        self.emit(f"return [{', '.join(self.get(v, 1) for v in g.outputs)}]")
        return "\n".join(self.lines) + "\n"


def generate(prog, args):
    """(source, run function) of the lean wrapper for `prog`, generated for inputs shaped like `args`."""
    gen = _Gen(prog, args)
    src = gen.source(args)
    ns = dict(gen.ns)
    exec(compile(src, f"<tilecraft wrapper {id(prog):x}>", "exec"), ns)  # noqa: S102 - our own generated code
    return src, ns["run"]
