"""The pointwise template: one program per XBLOCK elements of the iteration space.

A combined group (passes/fusion.py `combine_pointwise`: independent pointwise groups of other shapes) is one
launch whose program ids are split into one range per part; each part's body is a jitted helper of its own (its
names cannot clash with another part's), called from its branch."""
from __future__ import annotations

import math
import re

from ..ir import Value
from ..ir.types import next_pow2
from ..passes.fusion import Group
from .emit import Args, Emitter, decompose, header, needs_int64, store
from .kernel import Kernel


def _body(nodes, shape, outputs: list[Value], args: Args, pid: str) -> list[str]:
    """The lines computing `outputs` over iteration space `shape` for the XBLOCK elements of program `pid`."""
    numel = math.prod(shape)
    em = Emitter(nodes, args, "xmask")
    em.zero = "xindex * 0"
    for v in outputs:
        args.store(v)  # outputs first in the body's bookkeeping; order fixed below
    body_start = len(em.lines)
    wide = needs_int64(args, numel)
    em.line(f"xindex = {pid}{'.to(tl.int64)' if wide else ''} * XBLOCK + tl.arange(0, XBLOCK)")
    # no bounds mask when the blocks tile the space exactly (a constant-true mask: Triton drops it)
    em.line(f"xmask = tl.full([XBLOCK], 1, tl.int1) if {numel} % XBLOCK == 0 else xindex < {numel}")
    names = decompose(em, "xindex", list(range(len(shape))), shape, "i")
    idx = tuple(names[d] for d in range(len(shape)))
    em.linear = ("xindex", idx, tuple(shape))  # row-major operands read at xindex itself
    for v in outputs:
        store(em, v, idx)
    if needs_int64(args, numel) and ".to(tl.int64)" not in em.lines[body_start]:
        em.lines[body_start] = em.lines[body_start].replace(f"{pid} *", f"{pid}.to(tl.int64) *")
    body = "\n".join(em.lines)
    unused = [ln for ln in em.lines if (m := re.match(r"\s*(i\d+) = ", ln))  # index variables no access reads
              and len(re.findall(rf"\b{m.group(1)}\b", body)) == 1]
    return [ln for ln in em.lines if ln not in unused]


def _block(numel: int) -> int:
    # 16 elements a thread from 1M elements up (XBLOCK 2048, 4 warps): 8% faster than 1024 on an H200 for a
    # bf16 GELU over 8192 x 4096 (45.8 vs 49.9 us; bench/pointwise_sweep.py), as fast as a hand-written kernel
    return 2048 if numel >= 1 << 20 else min(1024, next_pow2(numel))


def pointwise_kernel(group: Group, outputs: list[Value], name: str) -> Kernel:
    args = Args()
    if group.parts:
        src, numel, grid, block = _combined_source(group, outputs, args, name)
    else:
        numel = math.prod(group.shape)
        lines = _body(group.nodes, group.shape, outputs, args, "tl.program_id(0)")
        src = header(name, args, ["XBLOCK"]) + "\n".join(lines) + "\n"
        grid = lambda c, n=numel: (max(1, -(-n // c["XBLOCK"])),)  # noqa: E731
        block = _block(numel)
    config = {"XBLOCK": block, "num_warps": 4 if block >= 256 else 1}
    return Kernel(name, "pointwise", src, name, list(args.specs), grid=grid, shapes={"numel": numel},
                  dtype=outputs[0].type.dtype, config=dict(config), default=dict(config),
                  info={"ops": [n.op for n in group.nodes], "rules": list(group.rules),
                        **({"parts": [list(p.shape) for p in group.parts]} if group.parts else {})}), \
        list(args.values)


def _combined_source(group: Group, outputs: list[Value], args: Args, name: str):
    """A combined group's source: helper `name_part<i>(<all args>, pid, XBLOCK)` per part, and the kernel,
    whose programs [start_i, start_i + cdiv(numel_i, XBLOCK)) run part i."""
    owner = {id(n): i for i, p in enumerate(group.parts) for n in p.nodes}
    for v in outputs:
        args.store(v)
    bodies = [_body(p.nodes, p.shape, [v for v in outputs if owner[id(v.producer)] == i], args, "pid")
              for i, p in enumerate(group.parts)]
    params = ", ".join(args.names)
    numels = [math.prod(p.shape) for p in group.parts]
    imports, kernel = header(name, args, ["XBLOCK"]).split("\n\n\n", 1)  # the helpers go between them
    src = imports + "\n\n\n"
    for i, lines in enumerate(bodies):
        src += f"@triton.jit\ndef {name}_part{i}({params}, pid, XBLOCK: tl.constexpr):\n"
        src += "\n".join(lines) + "\n\n\n"
    src += kernel + "    pid = tl.program_id(0)\n"
    start = "0"
    for i, n in enumerate(numels):
        end = f"{start} + ({n} + XBLOCK - 1) // XBLOCK" if start != "0" else f"({n} + XBLOCK - 1) // XBLOCK"
        cond = "if" if i == 0 else "elif" if i < len(numels) - 1 else "else"
        src += f"    {cond} pid < {end}:\n" if cond != "else" else "    else:\n"
        local = "pid" if start == "0" else f"pid - ({start})"
        src += f"        {name}_part{i}({params}, {local}, XBLOCK)\n"
        start = end
    block = _block(max(numels))
    grid = lambda c, ns=tuple(numels): (sum(-(-n // c["XBLOCK"]) for n in ns),)  # noqa: E731
    return src, sum(numels), grid, block
