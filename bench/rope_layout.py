"""RoPE and attention layouts of a compiled model: what its RoPE kernels read and write, the attention's layouts,
and the copies around them (GPT-NeoX issue: our RoPE kernel + an ATen copy before `dense` vs Inductor's).

    python bench/rope_layout.py [--models neox,llama_b4]   # the bench/models.py configs, bf16, on the GPU
    python bench/rope_layout.py --dry-run                   # their tiny configs on the CPU (Triton interpreter)

Per model: each kernel that joins RoPE parts (`cat` in its ops) with its argument shapes, strides and bytes;
each `sdpa` node's input and output strides; whether the attention output reaches the next matmul as a view; the
runtime's layout copies; on the GPU, the profiler's per-call times of those kernels, of the attention and of any
ATen copy (`direct_copy_kernel`, `elementwise_kernel`), which should be gone for NeoX. Exits 1 when a layout
copy is left, an attention output reaches a matmul only through a copying reshape, or the output differs from
eager.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import tilecraft  # noqa: E402
from models import build, rel_err  # noqa: E402
from tilecraft.passes.layout import _viewable  # noqa: E402

WATCH = ("cat", "copy", "clone", "attention", "attn", "fmha", "flash", "cudnn", "elementwise_kernel")


def _mib(a) -> float:
    return torch.Size(a.shape).numel() * a.dtype.itemsize / 2**20


def _reaches_matmul_as_view(g, sdpa) -> bool:
    """Are the reshapes of the attention output (before the output projection) views torch makes without a
    copy?"""
    users = g.users()
    stack, ok = [sdpa.out], True
    while stack:
        v = stack.pop()
        for u in users.get(v, []):
            if u.op in ("view", "permute", "alias"):
                ok = ok and (u.op != "view" or _viewable(v.type, u.out.type.shape))
                stack.append(u.out)
    return ok


def report(name: str, dry: bool) -> bool:
    cuda = not dry
    model, ids, _ = build(name, dry, "cuda" if cuda else "cpu")
    if cuda:
        model = model.to(torch.bfloat16)
    opts = {} if cuda else {"passes": _cpu_passes()}
    c = tilecraft.compile(model, **opts)
    with torch.no_grad():
        ref = model(ids)
        err = rel_err(c(ids), ref)
    print(f"== {name}: batch {tuple(ids.shape)}, rel err vs eager {err:.2e}")
    good = err < 5e-2
    for gr in c.report.graphs:
        prog = gr.program
        for k in getattr(prog, "kernels", []):
            if "cat" not in k.info.get("ops", ()) or not any(a.is_output and len(a.shape) == 4 for a in k.args):
                continue
            total = sum(_mib(a) for a in k.args)
            print(f"  kernel {k.name}: arguments {total:.2f} MiB")
            for a in k.args:
                print(f"    {'out' if a.is_output else 'in '} {tuple(a.shape)} strides {a.strides} {_mib(a):.2f} MiB")
        for n in gr.graph.nodes:
            if n.op == "sdpa":
                ins = ", ".join(str(v.type.strides) for v in n.inputs[:3])
                view = _reaches_matmul_as_view(gr.graph, n)
                print(f"  sdpa q/k/v strides {ins} -> {n.out.type.strides}; read by matmuls as a view: {view}")
                good = good and view
        print(f"  runtime layout copies: {sorted(prog.copies) or 'none'}")
        good = good and not prog.copies
    if cuda:
        from tilecraft.testing import gpu_profile

        with torch.no_grad():
            rows = gpu_profile(lambda: c(ids), 5, counts=True)
        print(f"  GPU {sum(us for _, us, _ in rows):.1f} us per call; kernels of interest (us per call, launches):")
        for k, us, cnt in rows:
            if any(w in k.lower() for w in WATCH):
                print(f"    {us:8.1f} {cnt:4.0f}  {k[:120]}")
    return good


def _cpu_passes():
    """The default pipeline with the CUDA-only layout passes on for the CPU (as the GPU runs them)."""
    from tilecraft.passes import default_passes, follow_input_layouts, fuse_attention, materialize_reshapes

    cpu = {"fuse_attention": lambda g: fuse_attention(g, ("cpu",)),
           "follow_input_layouts": lambda g: follow_input_layouts(g, ("cpu",)),
           "materialize_reshapes": lambda g: materialize_reshapes(g, ("cpu",))}
    return [(n, cpu.get(n, f)) for n, f in default_passes()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="neox,llama_b4")
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU (interpreter)")
    args = ap.parse_args(argv)
    ok = True
    for name in args.models.split(","):
        ok = report(name, args.dry_run) and ok
        torch._dynamo.reset()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
