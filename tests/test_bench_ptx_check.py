"""bench/ptx_check.py: the LLaMA-style model's generated kernels, as grouped on CUDA, compile for sm_90 on the
CPU (Triton's CUDA backend, no device), and their global accesses vectorize: RoPE's loads of q/k through views
and of cos/sin are 16-byte vectors (they were 2-byte scalar loads before views indexed run by run)."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("pdl", [False, True])
def test_llama_kernels_compile_for_hopper_with_vector_accesses(pdl):
    """pdl: the sources as TILECRAFT_PDL=1 rewrites them (each kernel's griddepcontrol.wait before its first global
    load or store, checked in the PTX), the same accesses."""
    proc = subprocess.run([sys.executable, "bench/ptx_check.py", "--model", "llama"] + (["--pdl"] if pdl else []),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [ln for ln in proc.stdout.splitlines() if " loads " in ln]
    rope = [ln for ln in rows if ln.startswith("pointwise_mul_neg_cat_add")]
    assert len(rope) == 1, proc.stdout  # q, and k with GQA's repeat: one combined kernel (two program ranges)
    for ln in rope:
        loads = ln.split("loads ")[1].split(";")[0].split()
        assert loads == ["ld.global.v4.b32"], ln
    norms = [ln for ln in rows if ln.startswith("reduction_cast_pow_scalar_mean_add_rsqrt_mul")]
    assert norms and all("ld.global.v4.b32" in ln and "st.global.v4.b32" in ln for ln in norms), rows
    assert "0 failed to compile for sm_90" in proc.stdout
    assert ("PDL-aware sources" in proc.stdout) == pdl
