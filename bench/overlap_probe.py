"""Does the quantized prefill's dequantize pass (memory-bound) overlap with compute-bound kernels when it runs on a
second CUDA stream? LLaMA-492M at batch 4 x 512: one layer's MLP weights (int4 g128 gate/up 2048 -> 2 x 5632 and
down 5632 -> 2048) dequantized (into the scratch buffer of the 'aten' backend), against the layer's attention (SDPA,
16 heads of 128, causal) or a bf16 GEMM (2048 x 2048 -> 11264). For each pair: GPU ms of A alone, B alone, A then B
on one stream, and B on a side stream started with A (CUDA events around 20 repetitions; cold weights from rotating
copies). Overlap works where "together" is well below "one stream".

`--carveouts 0,8,16`: the GEMM pair again with cuBLAS told to leave that many SMs free
(`torch._C._set_sm_carveout_experimental`), the GEMM issued before the dequantize on the side stream, so the
dequantize's programs can only take the SMs left free: GEMM alone, one stream and two streams per carve-out.

    python bench/overlap_probe.py [--out bench/results/overlap.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from tilecraft.quant import quantize_weight  # noqa: E402
from tilecraft.codegen.matmul import elapsed_ms  # noqa: E402
from tilecraft.quant.kernels import dequantize_into  # noqa: E402


def events_ms(fn, reps: int = 20) -> float:
    """GPU ms per call by CUDA events (codegen's elapsed_ms: launch cost kept out), after one warm-up call."""
    fn()
    torch.cuda.synchronize()
    return elapsed_ms(fn, torch.device("cuda"), reps, sleep_s=1e-3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/overlap.json")
    ap.add_argument("--carveouts", default="", help="comma-separated SM counts cuBLAS leaves free (e.g. 0,8,16)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("overlap_probe: needs a CUDA GPU (it times streams); nothing to do here", file=sys.stderr)
        return 2
    dev, bf = "cuda", torch.bfloat16
    g = torch.Generator().manual_seed(0)
    mats = []
    for _ in range(4):  # 4 layers' worth of MLP weights rotate: cold in L2
        gu = quantize_weight(torch.randn(11264, 2048, generator=g) * 0.02, "int4_weight_only", 128)
        dn = quantize_weight(torch.randn(2048, 5632, generator=g) * 0.02, "int4_weight_only", 128)
        mats.append([(q.qweight.to(dev), q.scales.to(dev), q.zeros.to(dev)) for q in (gu, dn)])
    it = [0]

    def deq():
        m = mats[it[0] % len(mats)]
        it[0] += 1
        for q, s, z in m:  # (into the one scratch buffer: only this stream touches it)
            dequantize_into("int4_weight_only", q, s, z, 128, torch.bfloat16)

    q = torch.randn(4, 16, 512, 128, dtype=bf, device=dev)
    k = torch.randn(4, 4, 512, 128, dtype=bf, device=dev).repeat_interleave(4, 1)
    v = torch.randn_like(k)
    x = torch.randn(2048, 2048, dtype=bf, device=dev)
    w = torch.randn(11264, 2048, dtype=bf, device=dev)

    def sdpa():
        F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def gemm():
        torch.mm(x, w.t())

    side = torch.cuda.Stream()
    rows = {}
    for name, a in (("sdpa", sdpa), ("gemm", gemm)):
        def serial(a=a):
            a()
            deq()

        def together(a=a):
            main = torch.cuda.current_stream()
            side.wait_stream(main)
            with torch.cuda.stream(side):
                deq()
            a()
            main.wait_stream(side)

        r = {"A": events_ms(a), "B": events_ms(deq), "one_stream": events_ms(serial),
             "two_streams": events_ms(together)}
        rows[name] = r
        print(f"{name}: A {r['A']:.3f} ms, dequantize {r['B']:.3f}, one stream {r['one_stream']:.3f}, "
              f"two streams {r['two_streams']:.3f} (saved {r['one_stream'] - r['two_streams']:.3f})", flush=True)
    carve = getattr(torch._C, "_set_sm_carveout_experimental", None)
    for c in [int(v) for v in args.carveouts.split(",") if v]:
        if carve is None:
            print("this torch has no _set_sm_carveout_experimental", flush=True)
            break
        carve(c if c else None)

        def gemm_first():
            main = torch.cuda.current_stream()
            side.wait_stream(main)
            gemm()
            with torch.cuda.stream(side):
                deq()
            main.wait_stream(side)

        def gemm_then_deq():
            gemm()
            deq()

        r = {"A": events_ms(gemm), "one_stream": events_ms(gemm_then_deq), "two_streams": events_ms(gemm_first)}
        r["B"] = rows["gemm"]["B"]
        rows[f"gemm_carveout{c}"] = r
        print(f"carve-out {c} SMs: GEMM {r['A']:.3f} ms, one stream {r['one_stream']:.3f}, two streams "
              f"{r['two_streams']:.3f} (saved {r['one_stream'] - r['two_streams']:.3f})", flush=True)
    if carve is not None:
        carve(None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
