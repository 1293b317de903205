"""The reduction template: rows (kept dims) × a reduced extent, with pointwise prologue and epilogue.

Each program owns XBLOCK rows. When RBLOCK covers the whole reduced extent the row stays in registers and is
read once (single pass); otherwise each statistic is one loop over the row (softmax uses the online max/sum
recurrence, so it reads the row once for both statistics) and a last loop writes the full-size outputs.
"""
from __future__ import annotations

import re

import torch

from ..ir import Node, Value
from ..passes.fusion import REDUCTIONS, Group
from .emit import TL, Args, Emitter, Unsupported, decompose, header, ir_comment, needs_int64, store
from .kernel import Kernel
from .pointwise import next_pow2

NEG_INF = '-float("inf")'


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


def reduction_kernel(group: Group, outputs: list[Value], name: str):
    F, D = group.shape, list(group.dims)
    K = [d for d in range(len(F)) if d not in D]
    xnumel, rnumel = _prod(F[k] for k in K), _prod(F[d] for d in D)
    reds = [n for n in group.nodes if n.op in REDUCTIONS]
    args = Args()
    for v in outputs:
        args.store(v)
    for n in reds:
        args.name_as(n.inputs[0], "x")
        if n.op == "layer_norm":
            args.name_as(n.inputs[1], "weight")
            args.name_as(n.inputs[2], "bias")
    rvars = [f"r{d}" for d in D]
    em = RowEmitter(group.nodes, args, rvars)
    em.zero = "xindex * 0"
    wide = needs_int64(args, xnumel * rnumel)
    pid = "tl.program_id(0).to(tl.int64)" if wide else "tl.program_id(0)"
    em.line(f"xindex = {pid} * XBLOCK + tl.arange(0, XBLOCK)[:, None]")
    em.line(f"xmask = xindex < {xnumel}")
    xn = decompose(em, "xindex", K, F, "x")
    top = len(em.lines)

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

    def accumulate_arg(is_max: bool, value_fn, k: int):
        """(value, first index) of the row's max (or min) over the reduced dims, as torch.argmax gives."""
        init = NEG_INF if is_max else 'float("inf")'
        red, arg, cmp = ("tl.max", "tl.argmax", ">") if is_max else ("tl.min", "tl.argmin", "<")
        v_acc, i_acc = f"acc{k}_v", f"acc{k}_i"
        if looped:
            em.line(f"{v_acc} = tl.full([XBLOCK, RBLOCK], {init}, tl.float32)")
            em.line(f"{i_acc} = tl.zeros([XBLOCK, RBLOCK], tl.int32)")

        def step(rn):
            v = em.tmp(f"tl.where(mask, {value_fn(rn)}, {init})")
            if not looped:
                em.line(f"{v_acc} = {red}({v}, 1)[:, None]")
                em.line(f"{i_acc} = {arg}({v}, 1, tie_break_left=True)[:, None]")
                return
            em.line(f"take = {v} {cmp} {v_acc}")
            em.line(f"{i_acc} = tl.where(take, rindex, {i_acc})")
            em.line(f"{v_acc} = tl.where(take, {v}, {v_acc})")

        row_loop(step)
        if looped:
            em.line(f"{v_acc}_r = {red}({v_acc}, 1)[:, None]")
            em.line(f"{i_acc} = tl.min(tl.where({v_acc} == {v_acc}_r, {i_acc}, 2147483647), 1)[:, None]")
            em.line(f"{v_acc} = {v_acc}_r")
        return v_acc, i_acc

    def emit_body():
        stats: dict[int, dict[str, str]] = {}
        for node in reds:
            x = node.inputs[0]
            is_float = x.type.dtype.is_floating_point
            acc_t = "tl.float32" if is_float else ("tl.int32" if x.type.dtype == torch.bool else "tl.int64")
            k = len(stats)
            st: dict[str, str] = {}
            stats[id(node)] = st
            em.line(ir_comment(node))

            def accumulate(kind, value_fn, st=st, k=k, acc_t=acc_t):
                """One statistic: kind in sum|max|min|online; value_fn(rn) gives the element."""
                acc = f"acc{k}_{kind}"
                init = {"sum": "0", "max": NEG_INF, "min": 'float("inf")', "online": NEG_INF}[kind]
                if acc_t != "tl.float32" and kind in ("max", "min"):
                    init = "0" if kind == "max" else "1"
                if looped:
                    em.line(f"{acc} = tl.full([XBLOCK, RBLOCK], {init}, {acc_t})")
                    if kind == "online":
                        em.line(f"{acc}_s = tl.zeros([XBLOCK, RBLOCK], tl.float32)")

                def step(rn):
                    v = value_fn(rn)
                    if acc_t == "tl.int32":
                        v = f"({v}).to(tl.int32)"
                    v = em.tmp(f"tl.where(mask, {v}, {init})")
                    if not looped:
                        if kind == "online":
                            em.line(f"{acc} = tl.max({v}, 1)[:, None]")
                            em.line(f"{acc}_s = tl.sum(tl.where(mask, tl.exp({v} - {acc}), 0), 1)[:, None]")
                        else:
                            fn = {"sum": "tl.sum", "max": "tl.max", "min": "tl.min"}[kind]
                            em.line(f"{acc} = {fn}({v}, 1)[:, None]")
                        return
                    if kind == "sum":
                        em.line(f"{acc} = {acc} + {v}")
                    elif kind in ("max", "min"):
                        em.line(f"{acc} = tl.{'maximum' if kind == 'max' else 'minimum'}({acc}, {v})")
                    else:
                        em.line(f"m_new = tl.maximum({acc}, {v})")
                        em.line(f"m_safe = tl.where(m_new == {NEG_INF}, 0.0, m_new)")
                        em.line(f"{acc}_s = {acc}_s * tl.exp({acc} - m_safe) + tl.exp({v} - m_safe)")
                        em.line(f"{acc} = m_new")

                row_loop(step)
                if looped:
                    if kind == "online":
                        em.line(f"{acc}_m = tl.max({acc}, 1)[:, None]")
                        em.line(f"{acc}_s = tl.sum({acc}_s * tl.exp({acc} - {acc}_m), 1)[:, None]")
                        em.line(f"{acc} = {acc}_m")
                    else:
                        fn = {"sum": "tl.sum", "max": "tl.max", "min": "tl.min"}[kind]
                        em.line(f"{acc} = {fn}({acc}, 1)[:, None]")
                return acc

            xval = lambda rn, x=x: em.value(x, full_idx(rn))  # noqa: E731
            op = node.op
            if op in ("sum", "mean"):
                s = accumulate("sum", xval)
                st["out"] = s if op == "sum" else f"({s} / {rnumel}.0)"
            elif op in ("amax", "amin"):
                st["out"] = accumulate("max" if op == "amax" else "min", xval)
            elif op in ("any", "all"):
                st["out"] = f"({accumulate('max' if op == 'any' else 'min', xval)} != 0)"
            elif op in ("var", "layer_norm"):
                mean = em.tmp(f"{accumulate('sum', xval)} / {rnumel}.0", name="mean")
                dev = lambda rn, x=x, mean=mean: f"({xval(rn)} - {mean}) * ({xval(rn)} - {mean})"  # noqa: E731
                ss = accumulate("sum", dev)
                if op == "var":
                    corr = node.attrs.get("correction", 1)
                    corr = 1 if corr is None else corr
                    st["out"] = f"({ss} / {max(rnumel - corr, 0)}.0)"
                else:
                    st["mean"] = mean
                    st["rstd"] = em.tmp(f"tl.rsqrt({ss} / {rnumel}.0 + {node.attrs.get('eps', 1e-5)!r})",
                                        name="rstd")
            elif op in ("argmax", "argmin", "max_dim", "min_dim"):
                st["val"], st["idx"] = accumulate_arg(op in ("argmax", "max_dim"), xval, k)
                st["out"] = st["idx"] if op.startswith("arg") else st["val"]
            elif op in ("softmax", "log_softmax"):
                acc = accumulate("online", xval)
                st["max"], st["sum"] = acc, f"{acc}_s"
            else:
                raise Unsupported(op)
            _register_specials(node, st)

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

    def _register_specials(node: Node, st: dict):
        x = node.inputs[0]
        cur_rn = lambda idx: {d: idx[d] for d in D}  # noqa: E731
        if node.op in ("softmax", "log_softmax"):
            def f(idx, node=node, st=st):
                full_check(idx, cur_rn(idx))
                xv = em.value(x, idx)
                if node.op == "softmax":
                    return em.tmp(f"tl.exp({xv} - {st['max']}) / {st['sum']}", name=node.op)
                return em.tmp(f"{xv} - {st['max']} - tl.log({st['sum']})", name=node.op)
            em.special[id(node.outputs[0])] = f
        elif node.op == "layer_norm":
            w, b = node.inputs[1], node.inputs[2]

            def f(idx, st=st):
                full_check(idx, cur_rn(idx))
                e = f"({em.value(x, idx)} - {st['mean']}) * {st['rstd']}"
                tail = idx[len(F) - len(D):]
                if isinstance(w, Value):
                    e = f"{e} * {em.value(w, tail)}"
                if isinstance(b, Value):
                    e = f"{e} + {em.value(b, tail)}"
                return em.tmp(e, name="layer_norm")
            em.special[id(node.outputs[0])] = f
            for out, key in ((node.outputs[1], "mean"), (node.outputs[2], "rstd")):
                em.special[id(out)] = lambda idx, out=out, key=key, st=st: (row_check(out, idx), st[key])[1]
        elif node.op in ("max_dim", "min_dim"):
            for out, key in ((node.outputs[0], "val"), (node.outputs[1], "idx")):
                em.special[id(out)] = lambda idx, out=out, key=key, st=st: (row_check(out, idx), st[key])[1]
        else:
            out = node.outputs[0]
            em.special[id(out)] = lambda idx, out=out, st=st: (row_check(out, idx), st["out"])[1]
        for o in node.outputs:
            if o.type.dtype not in TL:
                raise Unsupported(f"dtype {o.type.dtype}")

    # Body twice: single pass (RBLOCK covers the row) and looped; Triton picks one at compile time.
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
    del top
    src = header(name, args, ["XBLOCK", "RBLOCK"]) + "\n".join(em.lines) + "\n"
    rb = next_pow2(rnumel)
    if rb <= 4096:  # one row per program from 1024 columns up (H100: 1.45x faster than 4 rows at 1024)
        cfg = {"XBLOCK": 1 if rb >= 1024 else max(1, min(next_pow2(xnumel), 4096 // rb, 64)), "RBLOCK": rb}
    else:
        cfg = {"XBLOCK": 1, "RBLOCK": 2048}
    cfg["num_warps"] = 8 if cfg["RBLOCK"] >= 2048 else (4 if cfg["RBLOCK"] >= 256 else 2)
    k = Kernel(name, "reduction", src, name, list(args.specs),
               grid=lambda c, n=xnumel: (max(1, -(-n // c["XBLOCK"])),),
               shapes={"rows": xnumel, "cols": rnumel}, dtype=reds[0].inputs[0].type.dtype,
               config=dict(cfg), default=dict(cfg),
               info={"ops": [n.op for n in group.nodes], "rules": list(group.rules)})
    return k, list(args.values)
