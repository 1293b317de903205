"""Programmatic dependent launch (TILECRAFT_PDL): the source rewrite, and what it compiles to for sm_90 (on the CPU:
Triton's CUDA backend needs no GPU to emit PTX)."""
import ast

from tests.benches import run_with_qgemm_ptx
from tilecraft.codegen import kernel as kmod
from tilecraft.codegen.kernel import with_pdl

SRC = '''from __future__ import annotations
import triton
import triton.language as tl


@triton.jit
def helper(x):
    return x


@triton.jit
def k(x_ptr, out_ptr,
      N, BLOCK: tl.constexpr):  # a two-line signature
    """doc"""
    i = tl.arange(0, BLOCK)
    tl.store(out_ptr + i, helper(tl.load(x_ptr + i)))
'''


def test_wait_goes_first_or_at_the_mark():
    out = with_pdl(SRC, "k")
    ast.parse(out)
    lines = out.splitlines()
    assert lines[0].startswith("from __future__") and lines[1].startswith("from triton.language.extra.cuda")
    sig = lines.index("      N, BLOCK: tl.constexpr):  # a two-line signature")
    assert lines[sig + 1:sig + 3] == ["    _gdc_launch_dependents()", "    _gdc_wait()"]
    assert "def helper(x):\n    return x" in out  # other functions untouched
    marked = SRC.replace("    i = tl.arange(0, BLOCK)\n", "    i = tl.arange(0, BLOCK)\n    # PDL_WAIT\n")
    lines = with_pdl(marked, "k").splitlines()
    assert lines.index("    _gdc_launch_dependents()") < lines.index("    i = tl.arange(0, BLOCK)") < \
        lines.index("    _gdc_wait()")
    assert lines.count("    _gdc_wait()") == 1
    assert with_pdl(SRC, "nope") is None  # no such kernel: launched without PDL


def test_off_by_default_and_when_interpreting(monkeypatch):
    kmod.pdl_active.cache_clear()
    try:
        monkeypatch.setenv("TILECRAFT_PDL", "1")
        assert not kmod.pdl_active()  # interpreting (CPU)
        fn = kmod.load_source(SRC, "k")
        assert not getattr(fn, "_tilecraft_pdl", False)
    finally:
        kmod.pdl_active.cache_clear()


PTX_SCRIPT = """
import torch
from tilecraft.codegen import kernel as kmod
from tilecraft.quant import kernels as qk
kmod.pdl_active = qk.pdl_active = lambda: True
k = qk.make_kernel("int4_weight_only", 16, 2080, 1024, torch.bfloat16, 128)
assert k.extra["PREFETCH"]
sys.stdout.write(qgemm_ptx.compile_sm90(k, k.default_config()).asm["ptx"])
"""


def test_quantized_gemm_prefetches_its_weights_before_the_wait_sm90():
    """The int4 decode GEMM under PDL, compiled for sm_90 (in a fresh process: Triton's compiler cannot run in one
    that defined its kernels for the interpreter): launch_dependents first, then the L2 prefetches of its weight
    lines (a loop), then the grid-dependency wait, before any other global load."""
    ptx = run_with_qgemm_ptx(PTX_SCRIPT)
    body = ptx[ptx.index(".entry"):]
    first, pre, wait = (body.index(s) for s in ("griddepcontrol.launch_dependents", "prefetch.global.L2",
                                                "griddepcontrol.wait"))
    assert first < pre < wait
    assert body.count("griddepcontrol.wait") == 1
    loads = [i for i in range(len(body)) if body.startswith(("ld.global", "cp.async.ca", "cp.async.cg"), i)]
    assert loads and min(loads) > wait
