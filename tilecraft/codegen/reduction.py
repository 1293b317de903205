"""The reduction template: rows (kept dims) × a reduced extent, with pointwise prologue and epilogue.

Each program owns XBLOCK rows. When RBLOCK covers the whole reduced extent the row stays in registers and is
read once (single pass); otherwise each statistic is one loop over the row and a last loop writes the
full-size outputs. What a reduction computes is registry data (`OpDef.reduce`: its statistics, each a
`Combine` of Triton lines, and its outputs as expressions of them): this template only runs the row loop,
accumulates, finalizes and stores, and never looks at an op's name.
"""
from __future__ import annotations

import re

import torch

from ..ir import REGISTRY, Node, Value, next_pow2
from ..ir.ops import Stat
from ..passes.fusion import Group
from .emit import TL, Args, Emitter, Unsupported, decompose, header, ir_comment, needs_int64, store
from .kernel import Kernel


class RowEmitter(Emitter):
    """Emitter that loads row-only values with the row mask (so they stay [XBLOCK, 1])."""

    def __init__(self, nodes, args, rvars):
        super().__init__(nodes, args, "xmask")
        self.rvar_re = re.compile(r"\b(" + "|".join(rvars) + r")\b") if rvars else None

    def load(self, v, idx, upcast=True):
        if self.rvar_re is not None and not any(self.rvar_re.search(i) for i in idx):
            saved = self.masks[-1]
            self.masks[-1] = "xmask"
            try:
                return super().load(v, idx, upcast)
            finally:
                self.masks[-1] = saved
        return super().load(v, idx, upcast)


def _prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def accumulator_dtype(dtype: torch.dtype) -> str:
    """Floats accumulate in fp32, bools in int32 (counts), other integers in int64."""
    return "tl.float32" if dtype.is_floating_point else ("tl.int32" if dtype == torch.bool else "tl.int64")


def reduction_kernel(group: Group, outputs: list[Value], name: str):
    F, D = group.shape, list(group.dims)
    K = [d for d in range(len(F)) if d not in D]
    xnumel, rnumel = _prod(F[k] for k in K), _prod(F[d] for d in D)
    reds = [n for n in group.nodes if REGISTRY[n.op].reduce is not None]
    args = Args()
    for v in outputs:
        args.store(v)
    for n in reds:  # arguments named by their role in the registry entry (x, weight, bias)
        for role, v in zip(REGISTRY[n.op].reduce.inputs, n.inputs):
            if isinstance(v, Value):
                args.name_as(v, role)
    rvars = [f"r{d}" for d in D]
    em = RowEmitter(group.nodes, args, rvars)
    em.zero = "xindex * 0"
    wide = needs_int64(args, xnumel * rnumel)
    pid = "tl.program_id(0).to(tl.int64)" if wide else "tl.program_id(0)"
    em.line(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
    em.line(f"xmask = xindex < {xnumel}")
    xn = decompose(em, "xindex", K, F, "x")

    def full_idx(rn):
        return tuple(xn[d] if d in K else rn[d] for d in range(len(F)))

    def row_check(v: Value, idx: tuple):
        shape = v.type.shape
        if len(shape) == len(F):
            want = [xn[d] for d in range(len(F)) if shape[d] != 1]
            got = [i for i, s in zip(idx, shape) if s != 1]
        else:
            want = [xn[k] for k, s in zip(K, shape) if s != 1]
            got = [i for i, s in zip(idx, shape) if s != 1]
        if want != got:
            raise Unsupported(f"{v.name} read at another row")

    def full_check(idx: tuple, rn):
        want = full_idx(rn)
        if [a for a, s in zip(idx, F) if s != 1] != [b for b, s in zip(want, F) if s != 1]:
            raise Unsupported("full-size reduction output read at another index")

    persistent_rn: dict = {}

    def row_loop(fn):
        """Emit fn(rn) over whole rows: in registers once (single pass), or in a loop over RBLOCK chunks."""
        if not looped:
            if "rn" not in persistent_rn:
                em.line("rindex = tl.arange(0, RBLOCK)[None, :]")
                em.line(f"rmask = rindex < {rnumel}")
                em.line("mask = xmask & rmask")
                persistent_rn["rn"] = decompose(em, "rindex", D, F, "r")
                em.masks[-1] = "mask"
            fn(persistent_rn["rn"])
            return
        em.scalars.add("roff")
        em.line(f"for roff in range(0, {rnumel}, RBLOCK):")
        em.push("mask")
        em.line("rindex = roff + tl.arange(0, RBLOCK)[None, :]")
        em.line(f"rmask = rindex < {rnumel}")
        em.line("mask = xmask & rmask")
        rn = decompose(em, "rindex", D, F, "r")
        fn(rn)
        em.pop()

    def fill(expr: str, row: dict, node: Node, idx: tuple) -> str:
        """expr with its fields filled in order of appearance: row values by name; the node's inputs by their
        names in the registry ({x}, the reduced input, at the full index idx; the others at its trailing dims)."""
        names = REGISTRY[node.op].reduce.inputs

        class Fields(dict):
            def __missing__(self, key):
                v = node.inputs[names.index(key)]
                self[key] = e = em.value(v, idx[len(idx) - v.type.rank:])
                return e

        return expr.format_map(Fields(row))

    def accumulate(node: Node, stat: Stat, k: int, row: dict) -> None:
        """One pass over the row folding stat.of with the stat's combine; its results (and `then`) join row."""
        c = stat.combine
        acc_t = accumulator_dtype(node.inputs[0].type.dtype)
        acc = f"acc{k}_{c.name}" if c.name else f"acc{k}"
        names = {"acc": acc, "identity": c.identity if acc_t == "tl.float32" else c.int_identity, "acc_t": acc_t}
        if looped:
            for line in c.init:
                em.line(line.format(**names))

        def step(rn):
            v = fill(stat.of, row, node, full_idx(rn))
            if acc_t == "tl.int32":
                v = f"({v}).to(tl.int32)"
            v = em.tmp(f"tl.where(mask, {v}, {names['identity']})")
            for line in (c.step if looped else c.single):
                em.line(line.format(v=v, **names))

        row_loop(step)
        if looped:
            for line in c.finish:
                em.line(line.format(**names))
        row.update(zip(stat.names, (r.format(acc=acc) for r in c.results)))
        for key, expr in stat.then:
            row[key] = em.tmp(fill(expr, row, node, ()), name=key)
        if c.helper:
            helpers[c.helper] = None

    def read_output(node: Node, out: Value, spec, row: dict):
        """How the emitter reads a reduction output at idx: a row value, or (its expression reads {x}) an
        element computed from the input there and the row values."""
        pieces = (spec,) if isinstance(spec, str) else spec
        if "{x}" not in pieces[0]:
            return lambda idx: (row_check(out, idx), fill(pieces[0], row, node, idx))[1]

        names = REGISTRY[node.op].reduce.inputs

        def element(idx):
            full_check(idx, {d: idx[d] for d in D})
            used = [p for p in pieces[1:] if all(isinstance(node.inputs[names.index(f)], Value)
                                                 for f in re.findall(r"{(\w+)}", p) if f in names)]
            return em.tmp(fill(pieces[0] + "".join(used), row, node, idx), name=node.op)
        return element

    def emit_body():
        for k, node in enumerate(reds):
            em.line(ir_comment(node))
            reduce = REGISTRY[node.op].reduce
            row = {"n": rnumel, **(reduce.params(node.attrs, rnumel) if reduce.params else {})}
            for stat in reduce.stats:
                accumulate(node, stat, k, row)
            for out, spec in zip(node.outputs, reduce.outputs):
                em.special[id(out)] = read_output(node, out, spec, row)
            for o in node.outputs:
                if o.type.dtype not in TL:
                    raise Unsupported(f"dtype {o.type.dtype}")

        full = [v for v in outputs if v.type.shape == F]
        rows = [v for v in outputs if v.type.shape != F]
        if full:
            row_loop(lambda rn: [store(em, v, full_idx(rn)) for v in full])
        for v in rows:
            idx = _row_idx(v)
            store(em, v, idx, "xmask")

    def _row_idx(v: Value):
        shape = v.type.shape
        if len(shape) == len(F):
            return tuple(xn[d] if shape[d] != 1 else "0" for d in range(len(F)))
        if len(shape) == len(K):
            return tuple(xn[k] for k in K)
        raise Unsupported(f"output {v.name} of shape {shape} is neither row- nor full-sized")

    # Body twice: single pass (RBLOCK covers the row) and looped; Triton picks one at compile time.
    helpers: dict[str, None] = {}  # Triton helper functions the combines need, in order
    em.line(f"if RBLOCK >= {rnumel}:")
    em.indent += 1
    looped = False
    emit_body()
    em.indent -= 1
    em.special.clear()
    em.scopes = [{}]
    em.masks = ["xmask"]
    em.line("else:")
    em.indent += 1
    looped = True
    emit_body()
    em.indent -= 1
    src = header(name, args, ["XBLOCK", "RBLOCK"]) + "\n".join(em.lines) + "\n"
    src += "".join(f"\n\n{h}" for h in helpers)
    rb = next_pow2(rnumel)
    if rb <= 4096:  # one row per program from 1024 columns up (H100: 1.45x faster than 4 rows at 1024)
        cfg = {"XBLOCK": 1 if rb >= 1024 else max(1, min(next_pow2(xnumel), 4096 // rb, 64)), "RBLOCK": rb}
    else:
        cfg = {"XBLOCK": 1, "RBLOCK": 2048}
    # (a row of 1024, one per program, on 2 warps: H200, LayerNorm over 8192 rows 7.2 us, 8.4 with 4 warps, 12.5
    # with 8; bench/reduction_sweep.py, 2026-12-03)
    cfg["num_warps"] = 8 if cfg["RBLOCK"] >= 2048 else 2 if cfg["RBLOCK"] < 256 or cfg["RBLOCK"] == 1024 else 4
    k = Kernel(name, "reduction", src, name, list(args.specs),
               grid=lambda c, n=xnumel: (max(1, -(-n // c["XBLOCK"])),),
               shapes={"rows": xnumel, "cols": rnumel}, dtype=reds[0].inputs[0].type.dtype,
               config=dict(cfg), default=dict(cfg),
               info={"ops": [n.op for n in group.nodes], "rules": list(group.rules)})
    return k, list(args.values)
