"""Decode GEMMs ask L2 for the next quantized linear's weights (wq_gemm.py NEXT, runtime._plan_l2_next): which
weights each step is given, that the launches pass them through (step by step and through the lean wrapper),
and the sm_90 code of the prefetch. The prefetch itself is PTX (no interpreter): timed by bench/models.py."""
import pytest
import torch

import tilecraft
from tilecraft.compiler.runtime import KernelStep
from tilecraft.quant import kernels as qk
from tilecraft.testing import assert_close
from tests.benches import run_with_qgemm_ptx

transformers = pytest.importorskip("transformers")


def test_off_on_the_cpu_and_by_the_environment(monkeypatch):
    k = qk.make_kernel("int4_weight_only", 16, 64, 128, torch.bfloat16, 32)
    assert not qk.wants_l2_next(k, "cpu")
    assert not qk.wants_l2_next(k, "cuda")  # the interpreter runs no PTX
    monkeypatch.setattr(qk, "interpreting", lambda: False)
    assert qk.wants_l2_next(k, "cuda") and not qk.wants_l2_next(k, "cpu")
    monkeypatch.setenv("TILECRAFT_L2_NEXT", "0")
    assert not qk.wants_l2_next(k, "cuda")
    monkeypatch.delenv("TILECRAFT_L2_NEXT")
    big = qk.make_kernel("int4_weight_only", 2 * qk.L2_NEXT_MAX_M, 64, 128, torch.bfloat16, 32)
    assert not qk.wants_l2_next(big, "cuda")  # prefill GEMMs are compute-bound


@pytest.mark.parametrize("lean", [False, True])
def test_each_decode_gemm_gets_the_next_linears_weights(monkeypatch, lean):
    monkeypatch.setattr(qk, "wants_l2_next", lambda k, device: k.template == "wq_gemm")
    marked = []  # the interpreter runs no PTX: kernels stay without the prefetch, the plan and launches are real
    monkeypatch.setattr(qk.QuantKernel, "set_next", lambda self, on: marked.append(self) if on else None)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    torch._dynamo.reset()
    c = tilecraft.compile(model, quantize="int4_weight_only", lean_launch=lean)
    with torch.no_grad():
        ids = torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(1))
        c(ids, use_cache=False)
        prog = c.report.graphs[0].program
        quant = [s for s in prog.steps if isinstance(s, KernelStep) and isinstance(s.kernel, qk.QuantKernel)]
        assert len(quant) == 9  # (qkv, o, gate_up, down) x 2 layers + lm_head
        assert [id(k) for k in marked] == [id(s.kernel) for s in quant]
        for a, b in zip(quant, quant[1:] + quant[:1]):  # the last one's: the first's, for the next call
            assert len(a.prefetch) == 3 and all(x is y for x, y in zip(a.prefetch, b.values[1:4]))
            assert [v.type.dtype for v in a.prefetch] == [torch.uint8, torch.float32, torch.uint8]
        # every launch got three more tensors than the kernel's own arguments (QuantKernel.launch drops them
        # while NEXT is off)
        for seed in (2, 3):  # (the second call runs the lean wrapper when it is on)
            ids = torch.randint(0, 128, (1, 4), generator=torch.Generator().manual_seed(seed))
            assert_close(c(ids, use_cache=False).logits, c.model(ids, use_cache=False).logits)
        assert (prog._lean is not None) == lean and not prog.fell_back


def test_launch_passes_the_next_bytes(monkeypatch):
    """QuantKernel.launch turns the extra tensors into the NEXT arguments: their pointers and sizes in bytes,
    zero for absent ones (int8 has no zero points) and when NEXT is off."""
    k = qk.make_kernel("int8_weight_only", 16, 64, 128, torch.bfloat16)
    seen = {}
    monkeypatch.setattr(k, "_fast", type("F", (), {"launch": lambda self, fn, grid, args, kw, opts: seen.update(kw)})())
    args = [a.allocate("cpu") for a in k.args]
    w2, s2 = torch.zeros(32, 128, dtype=torch.int8), torch.zeros(32)
    k.launch(args + [w2, s2])
    assert (seen["nxw_n"], seen["nxs_n"], seen["nxz_n"]) == (0, 0, 0)
    k.set_next(True)
    try:
        k.launch(args + [w2, s2])
    finally:
        k.set_next(False)
    assert seen["nxw_ptr"] is w2 and seen["nxs_ptr"] is s2 and (seen["nxw_n"], seen["nxs_n"], seen["nxz_n"]) == (
        32 * 128, 32 * 4, 0)


PTX_SCRIPT = """
import torch
from tilecraft.quant import kernels as qk
k = qk.make_kernel("int4_weight_only", 16, 11264, 2048, torch.bfloat16, 128)
for on in (False, True):
    k.set_next(on)
    ptx = qgemm_ptx.compile_sm90(k, k.default_config()).asm["ptx"]
    info = qgemm_ptx.ptxas_info(ptx)
    sys.stdout.write(f"{ptx.count('prefetch.global.L2')} {info['ptxas_ok']} {info['spill_bytes']} "
                     f"{info['sass_loop'].get('instrs')}\\n")
"""


def test_the_prefetch_compiles_for_sm90():
    """The int4 decode GEMM with NEXT, compiled for sm_90 in a fresh process: prefetch instructions only with
    NEXT on, and no register spills."""
    off, on = (line.split() for line in run_with_qgemm_ptx(PTX_SCRIPT).strip().splitlines())
    assert off[0] == "0" and int(on[0]) > 0, (off, on)
    assert off[1:3] == on[1:3] == ["True", "0"], (off, on)  # ptxas ok, no spills
    assert int(on[3]) <= 1.02 * int(off[3]), (off, on)  # the main loop about the same: the prefetch is before it
