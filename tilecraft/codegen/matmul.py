"""The matmul template: a tiled GEMM (batched for bmm) with a fused pointwise epilogue, in two variants.

- grouped (`PERSISTENT=0`): one output tile per program, grouped ordering, masked `tl.load`s through the
  operands' real strides (a transposed or permuted operand costs no copy).
- persistent (`PERSISTENT=1`, for Hopper): one program per SM loops over the tiles in the same grouped order
  (`FLATTEN=1`: `tl.range(..., flatten=True)`, so the next tile's loads overlap this tile's epilogue; Triton
  found that slower on an H200 for some kernels, hence a knob); with `TMA=1` each
  operand that TMA can describe (a plain strided view of a kernel argument, unit stride in its last dim, other
  strides 16-byte multiples) is read through a device-side tensor descriptor, the others through masked loads.
  `EPILOGUE_SUBTILE=1` runs the epilogue on two BLOCK_N/2 halves (fewer live registers).
One source holds both variants behind constexpr `if`s, so the config alone picks one and the tuner searches
both. The epilogue (bias, activation, residual, scaling, cast) is applied to the fp32 accumulator before the
one masked store, in either variant.

Every matmul kernel has a second backend, chosen by its config's `BACKEND` knob: `"aten"` runs the matmul(s)
through ATen (cuBLAS on CUDA; `addmm`'s bias in cuBLASLt's epilogue) and the rest of the group as one generated
pointwise kernel afterwards, as Inductor's default does. It exists when the operands are kernel arguments seen
through views (no fused prologue). The default is ATen on a GPU (cuBLAS beats the grouped template at mid
sizes) and Triton in the interpreter; the schedule database overrides both (`tilecraft tune` times both).
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time

import torch
import triton
from triton.runtime import _allocation

from ..ir import Value, base_value
from ..ir.ops import REGISTRY, get_op
from ..ir.types import contiguous_strides
from ..logs import describe_error
from ..passes.fusion import Group, is_matmul
from .emit import Args, Emitter, Unsupported, header, interpreting, ir_comment, map_view, needs_int64, store
from .kernel import Kernel
from .pointwise import pointwise_kernel

log = logging.getLogger("tilecraft")

# knobs of the persistent variant; the grouped variant is all zeros (configs without them mean that)
VARIANT_KNOBS = {"PERSISTENT": 0, "TMA": 0, "EPILOGUE_SUBTILE": 0, "FLATTEN": 0, "WARP_SPECIALIZE": 0}
CONSTS = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", *VARIANT_KNOBS, "NUM_SMS"]
INTERPRETER_SMS = 3  # programs of a persistent launch on the interpreter: each loops over several tiles
BACKENDS = ("triton", "aten")


def _parts(mm):
    """(A, B, bias, alpha, beta) of a matmul node."""
    if mm.op == "addmm":
        bias, A, B = mm.inputs
        return A, B, bias, mm.attrs.get("alpha", 1), mm.attrs.get("beta", 1)
    A, B = mm.inputs
    return A, B, None, 1, 1


@functools.cache
def num_sms(device: int | None = None) -> int:
    """The persistent grid: the CUDA device's SM count (a few programs on the interpreter)."""
    if interpreting() or not torch.cuda.is_available():
        return INTERPRETER_SMS
    return torch.cuda.get_device_properties(torch.cuda.current_device() if device is None else device) \
        .multi_processor_count


def is_hopper(device: str) -> bool:
    """Is `device` a compute-capability-9 CUDA GPU (where TMA and the persistent variant are the default)?"""
    if interpreting() or not str(device).startswith("cuda") or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(torch.device(device))[0] == 9


def _alloc(size: int, alignment: int, stream):
    return torch.empty(size, dtype=torch.int8, device="cuda")


_ALLOCATOR_SET = threading.local()


def ensure_allocator() -> None:
    """Device-side tensor descriptors need a global scratch buffer per launch: give Triton an allocator unless
    someone already set one (Triton keeps it in a ContextVar, so each thread checks once)."""
    if getattr(_ALLOCATOR_SET, "done", False):
        return
    if _allocation._allocator.get() is _allocation._NULL_ALLOCATOR:
        triton.set_allocator(_alloc)
    _ALLOCATOR_SET.done = True


class MatmulKernel(Kernel):
    """A matmul group's kernel: the generated GEMM, or (config `BACKEND: "aten"`) its ATen plan. A generated
    launch adds NUM_SMS, falls back from TMA to pointer loads for an operand whose buffer is not 16-byte aligned
    (known only at launch), and from a failing persistent launch to the grouped variant (runtime launches only:
    the tuner's explicit configs fail loudly and are recorded as failed)."""

    def __init__(self, *a, aten: AtenPlan | None = None, tma_args: tuple = (), grouped: dict | None = None,
                 **kw):
        super().__init__(*a, **kw)
        self.aten = aten
        self.tma_args = tma_args  # positions of the arguments read through TMA descriptors
        self.grouped = grouped  # the grouped variant's heuristic config

    def make_plan(self, config: dict) -> tuple:
        consts, opts, grid = super().make_plan({k: v for k, v in {**VARIANT_KNOBS, **config}.items() if k != "BACKEND"})
        return {**consts, "NUM_SMS": num_sms()}, opts, grid

    def launch(self, args: list, config: dict | None = None) -> None:
        cfg = self.config if config is None else config
        if cfg.get("BACKEND") == "aten":
            if self.aten is None:
                raise Unsupported(f"kernel {self.name} has no ATen backend (a matmul operand is computed in it)")
            self.aten.run(args)
            return
        if cfg.get("PERSISTENT") and cfg.get("TMA"):
            if args and args[0].is_cuda:
                ensure_allocator()
            if any(args[i].data_ptr() % 16 for i in self.tma_args):
                cfg = {**cfg, "TMA": 0}
        try:
            super().launch(args, cfg)
        except Exception as e:  # noqa: BLE001 - a runtime launch keeps working on the grouped variant
            if config is not None or not cfg.get("PERSISTENT") or self.grouped is None:
                raise
            log.warning("tilecraft: kernel %s: the persistent variant failed (%s); using the grouped one",
                        self.name, describe_error(e))
            self.config = dict(self.grouped)
            super().launch(args, self.config)

    def __getstate__(self):
        return {**super().__getstate__(), "aten": None}


class _Gemm:
    """What both variants share: the group's matmuls, sizes, arguments and the epilogue."""

    def __init__(self, group: Group, outputs: list[Value]):
        # a "matmul-dual" group holds two matmuls with the same A: one K loop loads each A tile once for both
        self.group, self.outputs = group, outputs
        self.mms = [n for n in group.nodes if is_matmul(n)]
        self.dual = len(self.mms) == 2
        mm = self.mms[0]
        self.A = _parts(mm)[0]
        self.batched = mm.op == "bmm"
        self.out = mm.out.type
        self.M, self.N = self.out.shape[-2], self.out.shape[-1]
        self.K = self.A.type.shape[-1]
        self.BT = self.out.shape[0] if self.batched else 1
        self.dt = self.A.type.dtype
        self.accs = ["acc_a", "acc_b"] if self.dual else ["acc"]
        self.args = Args()
        for v in outputs:
            self.args.store(v)
        self.args.name_as(self.A, "a")  # arguments named by role: a, b (b0, b1 in a dual GEMM), bias
        for i, node in enumerate(self.mms):
            self.args.name_as(_parts(node)[1], f"b{i}" if self.dual else "b")
            self.args.name_as(_parts(node)[2], "bias")
        self.wide = needs_int64(self.args, self.BT * self.M * self.N) or \
            needs_int64(self.args, self.M * self.K * self.BT)
        self.cast = ".to(tl.int64)" if self.wide else ""
        self.pb = ("pid_b",) if self.batched else ()
        self.upcast = self.dt == torch.bfloat16 and interpreting()  # the interpreter's bf16 dot is wrong
        self.precision = ""
        if self.dt == torch.float32:
            self.precision = ', input_precision="tf32"' if torch.backends.cuda.matmul.allow_tf32 else \
                ', input_precision="ieee"'
        self.tma_names: list[str] = []

    def emitter(self) -> Emitter:
        em = Emitter(self.group.nodes, self.args, "omask")
        em.zero = "om * 0 + on * 0"
        em.indent = 2  # under `if PERSISTENT:` / `else:`
        em.scalars.update(("pid", "pid_b", "num_pid_m", "num_pid_n", "width", "first_m", "size_m", "pid_m",
                           "pid_n", "k0", "start", "tiles", "tile", "tile_c"))
        em.line(f"num_pid_m = tl.cdiv({self.M}, BLOCK_M)")
        em.line(f"num_pid_n = tl.cdiv({self.N}, BLOCK_N)")
        em.line("width = GROUP_M * num_pid_n")
        return em

    def tile_of(self, em: Emitter, pid: str) -> None:
        """pid_m, pid_n (and pid_b) of a tile number in the grouped ordering."""
        if self.batched and pid != "pid":
            em.line(f"pid_b = {pid} // tiles")
            em.line(f"pid = {pid} % tiles")
        elif pid != "pid":
            em.line(f"pid = {pid}")
        em.line("first_m = (pid // width) * GROUP_M")
        em.line("size_m = tl.minimum(num_pid_m - first_m, GROUP_M)")
        em.line("pid_m = first_m + ((pid % width) % size_m)")
        em.line("pid_n = (pid % width) // size_m")

    def tile_head(self, em: Emitter, pid: str) -> None:
        """A tile's indices, zeroed accumulators and the head of its K loop (masks for the pointer loads)."""
        self.tile_of(em, pid)
        em.line(f"rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)){self.cast}")
        em.line(f"rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)){self.cast}")
        em.line("am = rm[:, None]")
        em.line("bn = rn[None, :]")
        for acc, node in zip(self.accs, self.mms):
            em.line(ir_comment(node))
            em.line(f"{acc} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)")
        em.line(f"for k0 in range(0, {self.K}, BLOCK_K):")
        em.push("amask")
        em.line(f"rk = k0 + tl.arange(0, BLOCK_K){self.cast}")
        em.line("ak = rk[None, :]")
        em.line("bk = rk[:, None]")
        em.line(f"amask = (am < {self.M}) & (ak < {self.K})")
        em.line(f"bmask = (bk < {self.K}) & (bn < {self.N})")

    def dots(self, em: Emitter, a: str, bs: list[str]) -> None:
        a = f"{a}.to(tl.float32)" if self.upcast else a
        for acc, b in zip(self.accs, bs):
            b = f"{b}.to(tl.float32)" if self.upcast else b
            em.line(f"{acc} = tl.dot({a}, {b}, {acc}{self.precision})")

    def epilogue(self, em: Emitter, accs: list[str]) -> None:
        """Bind each matmul's result to its accumulator (+ bias) at (om, on) and store the group's outputs."""
        out, canon = self.out, self.pb + ("om", "on")

        def acc_value(acc, bias, alpha, beta, op):
            def value(idx):
                if tuple(idx) != canon:
                    raise Unsupported("matmul result read at another index")
                e = acc if alpha == 1 else f"{acc} * {alpha!r}"
                if bias is not None:
                    lead = out.rank - bias.type.rank
                    bi = tuple("0" if s == 1 else canon[j + lead] for j, s in enumerate(bias.type.shape))
                    bv = em.value(bias, bi)
                    e = f"{e} + {bv}" if beta == 1 else f"{e} + {bv} * {beta!r}"
                return e if e == acc else em.tmp(e, name=op)
            return value

        for acc, node in zip(accs, self.mms):
            em.special[id(node.out)] = acc_value(acc, *_parts(node)[2:], node.op)
        for v in self.outputs:
            store(em, v, canon)

    # ------------------------------------------------------------------ the grouped variant
    def grouped_body(self, em: Emitter) -> None:
        em.line("pid = tl.program_id(0)")
        if self.batched:
            em.line("pid_b = tl.program_id(1)")
        self.tile_head(em, "pid")
        a = em.raw_operand(self.A, self.pb + ("am", "ak"))
        em.masks[-1] = "bmask"
        bs = [em.raw_operand(_parts(node)[1], self.pb + ("bk", "bn")) for node in self.mms]
        self.dots(em, a, bs)
        em.pop()
        em.line("om = rm[:, None]")
        em.line("on = rn[None, :]")
        em.line(f"omask = (om < {self.M}) & (on < {self.N})")
        self.epilogue(em, self.accs)

    # ------------------------------------------------------------------ the persistent (TMA) variant
    def tma_operand(self, v: Value, idx: tuple) -> tuple | None:
        """(argument value, [(index variable, size, stride)] of its non-constant dims) when a TMA descriptor
        can read this operand tile, else None: a pure view chain (permute/transpose/unsqueeze) of a kernel
        argument whose dims are each read by one tile variable over its whole extent, with a unit-stride last
        dim (a tile dim) and 16-byte multiple other strides."""
        in_group, tile_vars = {id(n) for n in self.group.nodes}, set(idx[-2:])

        def is_arg(u):  # what raw_operand loads as a kernel argument
            q = u.producer
            return q is None or (id(q) not in in_group and
                                 (REGISTRY[q.op].category != "view" or q.op == "as_strided"))

        shape, strides = v.type.shape, v.type.strides
        while not is_arg(v):
            p = v.producer
            if id(p) in in_group:
                return None  # a fused prologue
            u = p.inputs[0]
            if p.op == "view" and is_arg(u) and u.type.strides == tuple(contiguous_strides(u.type.shape)):
                # a reshape of a contiguous argument (Linear on a [B, T, d] input): the same bytes, described
                # with the view's shape
                shape, strides, v = v.type.shape, tuple(contiguous_strides(v.type.shape)), u
                break
            idx, v = map_view(p, idx), u
            shape, strides = v.type.shape, v.type.strides
        t = v.type
        extent = {"pid_b": self.BT, "am": self.M, "ak": self.K, "bk": self.K, "bn": self.N}
        dims = [(i, n, s) for i, n, s in zip(idx, shape, strides) if i != "0"]
        names = [i for i, _, _ in dims]
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32) or len(set(names)) != len(names):
            return None
        if any(i not in extent or n != extent[i] for i, n, _ in dims) or not tile_vars <= set(names):
            return None
        if names[-1] == "pid_b" or dims[-1][2] != 1:
            return None
        if any(s <= 0 or s * t.dtype.itemsize % 16 for _, _, s in dims[:-1]):
            return None
        return v, dims

    def tma_load(self, em: Emitter, v: Value, idx: tuple) -> tuple[str, str] | None:
        """(descriptor line, load expression giving the [rows, cols] tile) for a TMA-readable operand."""
        found = self.tma_operand(v, idx)
        if found is None:
            return None
        base, dims = found
        arg = self.args.load(base)
        block = {"pid_b": "1", "am": "BLOCK_M", "ak": "BLOCK_K", "bk": "BLOCK_K", "bn": "BLOCK_N"}
        offset = {"pid_b": "pid_b", "am": "pid_m * BLOCK_M", "ak": "k0", "bk": "k0", "bn": "pid_n * BLOCK_N"}
        d = f"desc{len(self.tma_names)}"
        self.tma_names.append(arg)
        make = (f"{d} = tl.make_tensor_descriptor({arg}, shape={[n for _, n, _ in dims]}, "
                f"strides={[s for _, _, s in dims]}, block_shape=[{', '.join(block[i] for i, _, _ in dims)}])")
        e = f"{d}.load([{', '.join(offset[i] for i, _, _ in dims)}])"
        order = [i for i, _, _ in dims if i != "pid_b"]
        if len(order) != len(dims):
            e = f"tl.reshape({e}, ({block[order[0]]}, {block[order[1]]}))"
        if tuple(order) != tuple(idx[-2:]):
            e = f"tl.trans({e})"
        return make, e

    def persistent_body(self, em: Emitter) -> None:
        em.line("start = tl.program_id(0)")
        em.line("tiles = num_pid_m * num_pid_n")
        operands = [(self.A, self.pb + ("am", "ak"))] + [(_parts(n)[1], self.pb + ("bk", "bn")) for n in self.mms]
        tma = [self.tma_load(em, v, idx) for v, idx in operands]
        if any(tma):
            em.line("if TMA:")
            for t in tma:
                if t:
                    em.line("    " + t[0])
        em.line("tile_c = start - NUM_SMS")  # the epilogue's own tile counter (as Triton's persistent tutorial)
        em.line(f"for tile in tl.range(start, tiles * {self.BT}, NUM_SMS, flatten=FLATTEN, "
                f"warp_specialize=WARP_SPECIALIZE):")
        em.push("omask")
        self.tile_head(em, "tile")
        tiles = []
        for j, ((v, idx), t) in enumerate(zip(operands, tma)):
            em.masks[-1] = "amask" if j == 0 else "bmask"
            if t is None:
                tiles.append(em.raw_operand(v, idx))
                continue
            name = f"x{j}"
            em.line("if TMA:")
            em.line(f"    {name} = {t[1]}")
            em.line("else:")
            em.indent += 1
            em.line(f"{name} = {em.raw_operand(v, idx)}")
            em.indent -= 1
            tiles.append(name)
        self.dots(em, tiles[0], tiles[1:])
        em.pop()
        em.line("tile_c += NUM_SMS")
        self.tile_of(em, "tile_c")
        em.line(f"rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)){self.cast}")
        em.line("om = rm[:, None]")
        em.line("if EPILOGUE_SUBTILE:")
        em.indent += 1
        for acc in self.accs:
            em.line(f"{acc}_0, {acc}_1 = tl.split(tl.permute(tl.reshape({acc}, (BLOCK_M, 2, BLOCK_N // 2)), "
                    f"(0, 2, 1)))")
        for h in (0, 1):
            start = "pid_n * BLOCK_N" + (" + BLOCK_N // 2" if h else "")
            self.epilogue_at(em, start, "BLOCK_N // 2", [f"{acc}_{h}" for acc in self.accs])
        em.indent -= 1
        em.line("else:")
        em.indent += 1
        self.epilogue_at(em, "pid_n * BLOCK_N", "BLOCK_N", self.accs)
        em.indent -= 1
        em.pop()

    def epilogue_at(self, em: Emitter, start: str, width: str, accs: list[str]) -> None:
        """The epilogue on columns [start, start + width) of the tile, in a scope of its own."""
        em.scopes.append({})
        em.line(f"rn = ({start} + tl.arange(0, {width})){self.cast}")
        em.line("on = rn[None, :]")
        em.line(f"omask = (om < {self.M}) & (on < {self.N})")
        self.epilogue(em, accs)
        em.scopes.pop()


def _grid(M: int, N: int, BT: int, c: dict) -> tuple:
    """Launch grid: a program per tile (grouped), or one per SM at most (persistent). Module-level, so that a
    kernel pickles (benchmarks compile configs in worker processes)."""
    tiles = -(-M // c["BLOCK_M"]) * -(-N // c["BLOCK_N"])
    return (min(num_sms(), tiles * BT),) if c.get("PERSISTENT") else (tiles, BT)


def matmul_kernel(group: Group, outputs: list[Value], name: str, options=None):
    g = _Gemm(group, outputs)
    grouped, persistent = g.emitter(), g.emitter()
    g.grouped_body(grouped)
    g.persistent_body(persistent)
    src = (header(name, g.args, CONSTS) + "    if PERSISTENT:\n" + "\n".join(persistent.lines) + "\n    else:\n"
           + "\n".join(grouped.lines) + "\n")
    M, N, Kd, BT = g.M, g.N, g.K, g.BT
    aten = aten_plan(group, g.mms, outputs, list(g.args.values), name)
    backend = choose_backend(aten is not None, getattr(options, "matmul", "auto"), aligned(g.mms))
    # the persistent variant is the tuner's to choose until bench/gemm_backends.py has measured it on a Hopper GPU;
    # TILECRAFT_PERSISTENT_MATMUL=1 makes it the default there
    hopper = is_hopper(g.out.device) and os.environ.get("TILECRAFT_PERSISTENT_MATMUL") == "1"
    grouped_cfg = {**default_config(M, N, Kd, g.dt, dual=g.dual), "BACKEND": "triton"}
    cfg = {**(default_config(M, N, Kd, g.dt, dual=g.dual, hopper=True) if hopper else grouped_cfg),
           "BACKEND": backend}

    k = MatmulKernel(name, "matmul", src, name, list(g.args.specs), grid=functools.partial(_grid, M, N, BT),
                     shapes={"B": BT, "M": M, "N": N, "K": Kd, **({"G": 2} if g.dual else {})}, dtype=g.dt,
                     config=dict(cfg), default=dict(cfg),
                     info={"ops": [n.op for n in group.nodes], "rules": list(group.rules),
                           "tma_operands": len(g.tma_names)},
                     tma_args=tuple(g.args.names.index(a) for a in g.tma_names), grouped=grouped_cfg,
                     aten=aten)
    return k, list(g.args.values)


def choose_backend(aten_ok: bool, option: str, aligned: bool = True) -> str:
    """The default backend of a matmul group: `compile(matmul=...)` when it says "triton" or "aten", else ATen
    (cuBLAS) on a GPU and the generated template in the interpreter, where cuBLAS does not exist and the tests
    exercise the template. A GEMM whose rows are not 16-byte aligned stays generated: cuBLAS falls back to slow
    pre-Hopper kernels there (GPT-2's 50257-word head: 3.4 ms in cuBLAS, 0.61 ms generated, on an H200)."""
    if option not in ("auto",) + BACKENDS:
        raise ValueError(f"tilecraft.compile(matmul={option!r}): expected 'auto', 'triton' or 'aten'")
    if not aten_ok or option == "triton":
        return "triton"
    if option == "aten":
        return "aten"
    return "triton" if interpreting() or not aligned else "aten"


def aligned(mms) -> bool:
    """Is every matmul operand and result 16-byte aligned along its leading dimension (the stride that is not
    1), as cuBLAS's fast kernels need?"""
    for n in mms:
        for v in n.input_values() + [n.out]:
            t = v.type
            if t.rank < 2:
                continue
            s0, s1 = t.strides[-2], t.strides[-1]
            ld = s0 if s1 == 1 or t.shape[-1] == 1 else s1 if s0 == 1 or t.shape[-2] == 1 else None
            if ld is None or (ld * t.dtype.itemsize) % 16:
                return False
    return True


class AtenPlan:
    """How the "aten" backend runs a matmul group: each matmul through ATen on its operands (kernel arguments
    seen through views), then the group's other nodes as one generated pointwise kernel (None when the
    matmul results are all the group stores)."""

    def __init__(self, mms, values: list[Value], epilogue, epi_values: list[Value], residual=None, gelu=None):
        pos = {id(v): i for i, v in enumerate(values)}
        # GELU's tanh form of a biased matmul in cuBLASLt's epilogue (see tanh_gelu_of): its output position
        self.gelu = None if gelu is None else pos[id(gelu)]
        self.mms = [(n, [self._chain(x, pos) for x in n.input_values()],
                     pos.get(id(n.out))) for n in mms]
        # a folded residual add (see residual_add): (its operand's chain, the add's output position)
        self.residual = None if residual is None else (self._chain(residual[0], pos), pos[id(residual[1])])
        self.donation = None  # (output, input) positions: r's buffer can hold the sum, element for element
        if residual is not None:
            (i, _), out_pos = self.residual
            r, out, arg = residual[0].type, residual[1].type, values[i].type
            if r.shape == out.shape and r.strides == out.strides and arg.is_contiguous and \
                    arg.numel == out.numel and arg.dtype == out.dtype and base_value(residual[0]) is values[i] \
                    and not any(base_value(x) is values[i] for x in mms[0].input_values()):  # cuBLAS reads them
                self.donation = (out_pos, i)
        self.epilogue = epilogue
        # siblings (SwiGLU's gate and up): mms on one activation with weights of one shape, their products read
        # by the epilogue alone: one strided-batched GEMM where the weights lie equally spaced (stacked_alias)
        self.siblings = len(mms) > 1 and residual is None and gelu is None and all(
            n.op == "mm" and n.inputs[0] is mms[0].inputs[0] and n.inputs[1].type == mms[0].inputs[1].type
            and pos.get(id(n.out)) is None for n in mms)
        self._alias = None  # (weight addresses, the stacked view or None, the weights kept alive)
        self._batch_wins = None  # the device's measured choice for these shapes (sibling_gemm_wins), once known
        mm_ids = {id(n.out): j for j, n in enumerate(mms)}
        # each epilogue argument: ("arg", position in the matmul kernel's args) or ("mm", which matmul)
        self.epi_args = [("mm", mm_ids[id(v)]) if id(v) in mm_ids else ("arg", pos[id(v)]) for v in epi_values]

    @staticmethod
    def _chain(x: Value, pos: dict):
        """(argument position, the view functions from that argument to x, in order): each view's torch
        reference bound to its attributes once, not looked up on every launch."""
        views = []
        while id(x) not in pos:
            p = x.producer
            views.append(functools.partial(_view_fn, get_op(p.op).ref, tuple(p.inputs[1:]), dict(p.attrs)))
            x = p.inputs[0]
        return pos[id(x)], views[::-1]

    def kernels(self) -> list[Kernel]:
        """The generated kernels this plan launches (cuBLAS needs no compile)."""
        return [self.epilogue] if self.epilogue is not None else []

    def run(self, tensors: list) -> None:
        batched = self._batched(tensors) if self.siblings else None
        results = batched or []
        for node, operands, out_pos in self.mms if batched is None else ():
            ins = self._operands(tensors, operands)
            out = tensors[out_pos] if out_pos is not None else None
            if self.residual is not None:  # out = residual + a @ b, the add in cuBLAS's epilogue (beta = 1)
                (i, views), out_pos = self.residual
                r, out = tensors[i], tensors[out_pos]
                for view in views:
                    r = view(r)
                if r.data_ptr() == out.data_ptr() and r.stride() == out.stride():  # the runtime gave out r's buffer
                    r.baddbmm_(*ins) if node.op == "bmm" else r.addmm_(*ins)
                else:
                    (torch.baddbmm if node.op == "bmm" else torch.addmm)(r, *ins, out=out)
                return
            if self.gelu is not None:  # cuBLASLt's GELU epilogue on CUDA (tanh form): no epilogue kernel
                torch._addmm_activation(*ins, use_gelu=True, out=tensors[self.gelu])
                return
            if node.op == "addmm":
                r = torch.addmm(*ins, beta=node.attrs.get("beta", 1), alpha=node.attrs.get("alpha", 1), out=out)
            else:
                r = (torch.bmm if node.op == "bmm" else torch.mm)(*ins, out=out)
            results.append(r)
        if self.epilogue is not None:
            self.epilogue.launch([results[i] if kind == "mm" else tensors[i] for kind, i in self.epi_args])

    def _operands(self, tensors: list, operands) -> list:
        ins = []
        for i, views in operands:
            t = tensors[i]
            for view in views:
                t = view(t)
            ins.append(t)
        return ins

    def _batched(self, tensors: list) -> list | None:
        """The sibling products [a @ b_j] as one `bmm` over the weights' stacked view, or None (run them one by
        one) where the weights are not equally spaced or the device measured the batched call slower."""
        if self._batch_wins is False:
            return None
        ins = [self._operands(tensors, ops) for _, ops, _ in self.mms]
        a, bs = ins[0][0], [x[1] for x in ins]
        ptrs = tuple(b.data_ptr() for b in bs)
        if self._alias is None or self._alias[0] != ptrs:
            self._alias = (ptrs, stacked_alias(bs), bs)
        stacked = self._alias[1]
        if stacked is None:
            return None
        order, view = stacked
        batched = lambda: torch.bmm(a.expand(len(bs), *a.shape), view)  # noqa: E731
        if self._batch_wins is None:
            self._batch_wins = sibling_gemm_wins(a, bs, batched)
            if not self._batch_wins:
                return None
        out = batched()
        return [out[order.index(j)] for j in range(len(bs))]


def stacked_alias(ts: list) -> tuple[list[int], torch.Tensor] | None:
    """(order, view): a [G, *shape] tensor whose entry i is ts[order[i]], aliasing their memory, when the
    tensors ts have one device, dtype, shape and strides and lie at equally spaced addresses (two always do):
    the strided-batched operand cuBLAS takes, so sibling weights need no stacked copy. Else None. The view's
    storage is not owned (made through the CUDA / numpy array interface): the caller keeps ts alive, and only
    reads it."""
    import numpy as np

    t0, size = ts[0], ts[0].element_size()
    if t0.device.type not in ("cuda", "cpu") or size not in (2, 4, 8) or any(
            t.device != t0.device or t.dtype != t0.dtype or t.shape != t0.shape or t.stride() != t0.stride()
            for t in ts):
        return None
    order = sorted(range(len(ts)), key=lambda i: ts[i].data_ptr())
    ptrs = [ts[i].data_ptr() for i in order]
    gap = ptrs[1] - ptrs[0]
    if gap <= 0 or gap % size or any(q - p != gap for p, q in zip(ptrs, ptrs[1:])):
        return None
    # integers of the element's size, then a dtype view (numpy has no type string for bfloat16)
    spec = {"shape": (len(ts), *t0.shape), "typestr": f"<i{size}", "version": 3, "data": (ptrs[0], False),
            "strides": tuple(st * size for st in (gap // size, *t0.stride()))}
    if t0.device.type == "cuda":
        view = torch.as_tensor(type("CudaArray", (), {"__cuda_array_interface__": spec})(), device=t0.device)
    else:
        view = torch.from_numpy(np.asarray(type("HostArray", (), {"__array_interface__": spec})()))
    return order, view.view(t0.dtype)


_SIBLING_WINS: dict = {}  # (device, shapes, dtype) -> does the batched call beat separate ones (measured once)


def sibling_gemm_wins(a, bs: list, batched) -> bool | None:
    """Is one batched GEMM over sibling weights faster on this device than a GEMM per weight? Measured once per
    problem with CUDA events (after ~20 ms of GPU work and 3 warm-up calls each, 5 rounds of 10 calls each in
    alternating order: the median round; the first call of a compiled program), since cuBLAS's kernel choice
    decides it: on an H200 the batched call over aliased weights takes 8.1 us against 13.0 for M=16 x 2048 ->
    2x5632 and 238 against 247 for M=4096 (profiler), but 4% more for M=2048 (bench/sibling_gemm_probe.py).
    (Rounds of 3 calls after one warm-up flipped LLaMA-492M b1x16's gate/up choice between runs: 127 or 135
    launches, 0.543 or 0.562 ms.) None (undecided: run them separately) during a CUDA graph capture."""
    key = (a.device, tuple(a.shape), a.stride(), tuple(bs[0].shape), bs[0].stride(), len(bs), a.dtype)
    won = _SIBLING_WINS.get(key)
    if won is None:
        if a.is_cuda and torch.cuda.is_current_stream_capturing():
            return None
        from ..testing import interleaved_rounds

        separate = lambda: [torch.mm(a, b) for b in bs]  # noqa: E731
        if a.is_cuda:  # ~20 ms of GPU work first: an idle GPU clocks down, and ramping clocks favour what runs last
            torch.cuda._sleep(int(0.02 * 2e9))
        for fn in (batched, separate) * 3:
            fn()
        tb, ts = (sorted(t) for t in interleaved_rounds([batched, separate], 5,
                                                           lambda fn: elapsed_ms(fn, a.device, reps=10)))
        won = _SIBLING_WINS[key] = tb[2] < ts[2]
    return won


def elapsed_ms(fn, device, reps: int = 3, sleep_s: float = 5e-4) -> float:
    """Time per call of fn: GPU time by CUDA events on a GPU (the GPU first kept busy for `sleep_s` while the
    calls are queued, so the host's launch cost stays out of the interval: 12 us of cuBLAS read 78 us without),
    by the clock on the CPU."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) * 1e3 / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(int(sleep_s * 2e9))  # GPU clock cycles (~2 GHz)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def residual_add(mm, rest, outputs: list[Value], values: list[Value], in_group: set):
    """(r, the add's result) when the group is `mm(a, b) + r` and stores only the sum (mm: the group's one
    matmul, whose op the caller has checked: mm, bmm, a bias-free quantized linear): r a kernel
    argument seen through views, of the result's dtype and broadcastable to it, the sum row-major. ATen then
    computes it as `addmm(r, a, b, out=...)` (`baddbmm` for bmm): no generated epilogue kernel reads the
    product back (LLaMA's residual adds after o_proj and down_proj). When the runtime gives the output r's own
    buffer (r dead after this, see Kernel.donation) it is an in-place `addmm_`; otherwise ATen on CUDA
    copies r into the output first (one read and one write, less than the epilogue's two reads and a write).
    cuBLAS adds in fp32 before the one rounding; eager rounds the product first: equal within bf16 tolerance."""
    if len(rest) != 1 or rest[0].op != "add":
        return None
    add = rest[0]
    if add.attrs.get("alpha", 1) != 1 or len(outputs) != 1 or outputs[0] is not add.out:
        return None
    ins = add.inputs
    if len(ins) != 2 or not all(isinstance(v, Value) for v in ins) or sum(v is mm.out for v in ins) != 1:
        return None
    r, out = ins[1] if ins[0] is mm.out else ins[0], add.out.type
    b = base_value(r)
    if id(b) not in {id(v) for v in values} or (b.producer is not None and id(b.producer) in in_group):
        return None
    if r.type.dtype != out.dtype or out.dtype != mm.out.type.dtype or not out.is_contiguous or \
            torch.broadcast_shapes(r.type.shape, out.shape) != tuple(out.shape):
        return None
    return r, add.out


def tanh_gelu_of(mm, rest, outputs: list[Value]) -> bool:
    """Is the group a biased CUDA matmul whose one stored result is GELU's tanh form of the product (GPT-2's
    gelu_new, `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`)? Then `torch._addmm_activation(use_gelu=True)`
    computes it in cuBLASLt's GELU epilogue (the tanh form, applied in fp32 before the one rounding; on the CPU
    ATen's version is the exact GELU, so CUDA only) instead of a GEMM and an epilogue kernel that reads the
    product back. The epilogue is recognised by what it computes: its ops are evaluated on sample values (float
    casts taken as exact) and compared with the formula."""
    import torch.nn.functional as F

    out = mm.out.type
    if mm.op != "addmm" or out.device != "cuda" or mm.attrs.get("beta", 1) != 1 or mm.attrs.get("alpha", 1) != 1 \
            or out.rank != 2 or mm.inputs[0].type.shape != (out.shape[1],) or len(outputs) != 1 or not rest:
        return False
    res = outputs[0].type
    if res.shape != out.shape or res.dtype != out.dtype or not res.is_contiguous:
        return False
    y = torch.linspace(-6.0, 6.0, 1201, dtype=torch.float64)
    env = {id(mm.out): y}
    for n in rest:
        if REGISTRY[n.op].category != "pointwise" or len(n.outputs) != 1:
            return False
        args = []
        for v in n.inputs:
            if isinstance(v, Value) and id(v) not in env:
                return False
            args.append(env[id(v)] if isinstance(v, Value) else v)
        try:
            env[id(n.out)] = args[0] if n.op == "cast" and n.attrs["dtype"].is_floating_point else \
                get_op(n.op).ref(*args, **n.attrs)
        except Exception:  # noqa: BLE001 - an op that does not evaluate on a plain vector: not this pattern
            return False
    got = env.get(id(outputs[0]))
    return isinstance(got, torch.Tensor) and got.shape == y.shape and torch.allclose(
        got.double(), F.gelu(y, approximate="tanh"), rtol=1e-6, atol=1e-7)


def _view_fn(ref, extra: tuple, attrs: dict, t):
    return ref(t, *extra, **attrs)


def aten_plan(group: Group, mms, outputs: list[Value], values: list[Value], name: str) -> AtenPlan | None:
    """The "aten" backend of a matmul group, or None when a matmul operand is computed inside the group (a
    fused prologue) or the epilogue cannot be generated on its own."""
    pos = {id(v) for v in values}
    in_group = {id(n) for n in group.nodes}
    for n in mms:
        for x in n.input_values():
            b = base_value(x)
            if id(b) not in pos or (b.producer is not None and id(b.producer) in in_group):
                return None
    mm_ids = {id(n) for n in mms}
    rest = [n for n in group.nodes if id(n) not in mm_ids]
    epi_outs = [v for v in outputs if not any(v is n.out for n in mms)]
    if any(n.out.type.shape != mms[0].out.type.shape for n in rest):
        return None  # a prologue node of another shape
    residual = residual_add(mms[0], rest, outputs, values, in_group) if len(mms) == 1 and \
        mms[0].op in ("mm", "bmm") else None
    if residual is not None:
        return AtenPlan(mms, values, None, [], residual)
    if len(mms) == 1 and tanh_gelu_of(mms[0], rest, outputs):
        return AtenPlan(mms, values, None, [], gelu=outputs[0])
    epilogue, epi_values = None, []
    if epi_outs:
        try:
            epilogue, epi_values = pointwise_kernel(Group("pointwise", rest, mms[0].out.type.shape), epi_outs,
                                                    f"{name}_epilogue"[:60])
        except Unsupported:
            return None
        mm_outs = {id(n.out) for n in mms}
        if any(id(v) not in pos and id(v) not in mm_outs for v in epi_values):
            return None
        epilogue.config = dict(epilogue.default)
    return AtenPlan(mms, values, epilogue, epi_values)



def default_config(M: int, N: int, K: int, dtype, dual: bool = False, hopper: bool = False) -> dict:
    """A reasonable tile for the shape (the tuner replaces it with a measured one). Measured on an H100
    (bench/tune_gemm.py): 128x256x64, 8 warps, 3 stages is the best of the space for large fp16/bf16 GEMMs
    (0.95-1.02x cuBLAS at 4096^3 and 8192^3; 128x128 reached 0.76-0.84x). Small M (decode, GEMV-like) is
    memory-bound: narrow N tiles give enough programs to fill the SMs, and long K tiles keep loads in flight.
    `dual`: the kernel holds two accumulators (a "matmul-dual" group), so the widest tile is halved.
    `hopper`: fp16/bf16 GEMMs with M > 64 take the persistent TMA variant (Triton's persistent-matmul tutorial
    configs: 128x256x64 or 128x128x64, 8 warps), with 128-wide N tiles when 128x256 tiles would not give every
    SM one (64x128 when 128x128 would not); everything else (other GPUs, the interpreter) keeps the grouped
    variant. Unmeasured on the H200 yet: bench/gemm_backends.py sweeps these against cuBLAS."""
    half = dtype in (torch.float16, torch.bfloat16)
    if hopper and half and M > 64 and N >= 64 and K >= 64:
        sms, tiles = num_sms(), (lambda bm, bn: -(-M // bm) * -(-N // bn))
        cfg = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4,
               **VARIANT_KNOBS, "PERSISTENT": 1, "TMA": 1, "FLATTEN": 1}
        if not dual and tiles(128, 256) >= sms:
            cfg.update(BLOCK_N=256, num_stages=3)
        elif dual:
            cfg.update(num_stages=3)
        elif tiles(128, 128) < sms:  # too few 128x128 tiles to give every SM one
            cfg.update(BLOCK_M=64, num_warps=4)
        return cfg
    if M <= 64:
        bm = 16 if M <= 16 else 32 if M <= 32 else 64
        bn = 32 if N <= 32 or N < 64 * 256 else 64
        bk = min(128 if half else 64, max(32, 1 << (max(K, 1) - 1).bit_length()))
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": 4, "num_stages": 3,
                **VARIANT_KNOBS}
    if half and M * N >= 2**24 and N >= 256 and K >= 64:  # dual: two 128x256 fp32 accumulators would spill
        return {"BLOCK_M": 128, "BLOCK_N": 128 if dual else 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                "num_stages": 3, **VARIANT_KNOBS}
    bm = 64 if M * N <= 2**20 else 128
    bn = 32 if N <= 32 else 64 if N <= 64 or M * N <= 2**20 else 128
    bk = 32 if K <= 32 or dtype == torch.float32 else 64
    big = bm * bn >= 128 * 128
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": 8 if big else 4,
            "num_stages": 3, **VARIANT_KNOBS}
