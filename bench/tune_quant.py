"""Tuning factories for `tilecraft tune`: the quantized GEMM kernels (`wq_gemm`, epilogues fused) of LLaMA-492M's
b1x16 step as `bench/models.py` compiles it (bf16 activations, int4 or int8 weights). The fused kernels start
from the bare GEMM's default config (bench/q4_decode_sweep.py sweeps bare kernels only); tuning them and
compiling with the database shows what their configs are worth:

    python -m tilecraft tune bench/tune_quant.py:int4_b1 --budget 32 --total-seconds 300 --db q4.sqlite
    python bench/models.py --models llama_b1 --backends tilecraft --quant int4 --tc-opts schedules=q4.sqlite

On the CPU the factories build `bench/models.py`'s tiny configs (Triton interpreter; `--simulate` to tune).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _kernels(scheme: str) -> list:
    import torch

    from models import QUANT, build
    from tilecraft.cli_tune import collect_kernels
    from tilecraft.passes.quantize import quantize

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model, ids, _ = build("llama_b1", dev == "cpu", dev)
    if dev == "cuda":
        model = model.to(torch.bfloat16)
    # the quantized copy compile(quantize=...) makes, compiled and run once as `tilecraft tune` does for a model
    qmodel = quantize(model, QUANT[scheme], sibling_blocks=True)
    return [k for k in collect_kernels((qmodel, ids)) if k.template == "wq_gemm"]


def int4_b1() -> list:
    return _kernels("int4")


def int8_b1() -> list:
    return _kernels("int8")
