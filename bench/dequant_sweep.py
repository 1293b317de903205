"""The prefill's dequantize pass (quantized matmul "aten" backend, M >= 256: the weight dequantized into a bf16
scratch buffer, then cuBLAS) swept over its tiles and warps on LLaMA-492M's weight shapes, cold weights, int8 and
int4 (groups of 128). Prints per scheme and shape the default's µs, the best config, and its share of the copy
peak measured in the same run (bytes read + written / time); last, the model's dequantize time per b4x512 step
(8 layers + lm_head) with the defaults and with each shape's best.

    python bench/dequant_sweep.py [--out bench/results/dequant_sweep.json]
    python bench/dequant_sweep.py --dry-run   # CPU interpreter, one tiny shape, two tiles (a smoke test)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import peaks  # noqa: E402 - bench/peaks.py: the device's measured copy bandwidth
from quant_linear import cold_copies_us  # noqa: E402
from tilecraft.quant import quantize_weight  # noqa: E402
from tilecraft.quant.kernels import DEQUANT_TILES, dequantize_into  # noqa: E402

# N x K (weight rows x in-features) and how often a LLaMA-492M step dequantizes it
SHAPES = {(3072, 2048): 8, (2048, 2048): 8, (11264, 2048): 8, (2048, 5632): 8, (32000, 2048): 1}
TILES = [(bn, bk, w, asm) for bn, bk, w, asm in itertools.product([16, 32, 64, 128], [64, 128, 256], [4, 8], [0, 1])
         if 1024 <= bn * bk <= 32768]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/dequant_sweep.json")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("dequant_sweep: needs a CUDA GPU (or --dry-run); nothing to do here", file=sys.stderr)
        return 2
    dev = "cpu" if dry else "cuda"
    peak = float("nan") if dry else peaks.measure()["bandwidth"] / 1e12
    print(f"copy peak {peak:.2f} TB/s", flush=True)
    shapes = {(48, 64): 2} if dry else SHAPES
    tiles = [(16, 32, 4, 0), (32, 32, 4, 0)] if dry else TILES
    rows, total = [], {}
    for scheme in ("int8_weight_only", "int4_weight_only"):
        group = (32 if dry else 128) if scheme.startswith("int4") else 0
        for (n, k), count in shapes.items():
            q = quantize_weight(torch.randn(n, k) * 0.02, scheme, group or 128)
            qw, s = q.qweight.to(dev), q.scales.to(dev)
            z = q.zeros.to(dev) if q.zeros is not None else None
            ref = q.dequantize(torch.float32).to(torch.bfloat16).to(dev)
            moved = qw.numel() * qw.element_size() + s.numel() * s.element_size() + n * k * 2 + (
                z.numel() if z is not None else 0)
            res = []
            for bn, bk, w, asm in tiles:
                if asm and not group:  # (an int4 path)
                    continue

                def call(t, bn=bn, bk=bk, w=w, asm=asm):
                    dequantize_into(scheme, t, s, z, group, torch.bfloat16, tiles=(bn, bk), warps=w, asm=bool(asm))
                try:
                    out = dequantize_into(scheme, qw, s, z, group, torch.bfloat16, tiles=(bn, bk), warps=w,
                                          asm=bool(asm))
                    err = float((out.float() - ref.float()).abs().max())
                    if err > 1e-2 * float(ref.float().abs().max()):
                        print(f"  {n}x{k} {bn}x{bk} w{w} asm{asm}: WRONG (max err {err:.3g})", flush=True)
                        continue
                    us = float("nan") if dry else cold_copies_us(call, qw)
                except Exception as e:  # noqa: BLE001 - a config that does not compile drops out
                    print(f"  {n}x{k} {bn}x{bk} w{w} asm{asm}: {type(e).__name__}: {str(e)[:80]}", flush=True)
                    continue
                res.append({"tiles": [bn, bk, w, asm], "us": us, "pct_copy_peak": 100 * moved / us / 1e6 / peak})
            res.sort(key=lambda r: r["us"])
            d = [16, 32] if dry else list(DEQUANT_TILES[scheme])  # (the interpreter's tiles, dequantize_into)
            dflt = next((r for r in res if r["tiles"] == [d[0], min(d[1], group or d[1]), 4, 0]), None)
            best = res[0]
            rows.append({"scheme": scheme, "N": n, "K": k, "count": count, "bytes": moved, "default": dflt,
                         "best": best, "top": res[:6]})
            tot = total.setdefault(scheme, [0.0, 0.0])
            tot[0] += count * (dflt["us"] if dflt else float("nan"))
            tot[1] += count * best["us"]
            print(f"{scheme} {n}x{k}: default {dflt['us'] if dflt else float('nan'):.1f} us, best {best['us']:.1f} us "
                  f"{best['tiles']} ({best['pct_copy_peak']:.0f}% of copy peak)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": "cpu" if dry else torch.cuda.get_device_name(),
                                          "copy_peak_tbs": peak, "rows": rows, "step_us": total, "dry_run": dry},
                                         indent=1))
    print(f"\ndequantize pass, cold, copy peak {peak:.2f} TB/s")
    print(f"{'scheme':18} {'N x K':>12} {'default':>8} {'best':>8} {'%peak':>6}  best tiles (BN, BK, warps, ASM)")
    for r in rows:
        print(f"{r['scheme']:18} {r['N']:>6}x{r['K']:<5} {r['default']['us'] if r['default'] else float('nan'):8.1f} "
              f"{r['best']['us']:8.1f} {r['best']['pct_copy_peak']:6.0f}  {r['best']['tiles']}")
    for scheme, (d, b) in total.items():
        print(f"{scheme}: one b4x512 step dequantizes in {d:.0f} us (defaults), {b:.0f} us (each shape's best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
