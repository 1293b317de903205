"""int4 (or int8) decode GEMM (M=16, bf16 activations, int4 groups of 128): a wide config sweep of the wq_gemm kernel,
timed with cold weights, on LLaMA-492M's weight shapes. Every config is checked against the dequantized reference
before it is timed; the heuristic default is always among them. quant_linear.py ranks its sweep by warm
(L2-resident) time; this one ranks by cold time only, which is what a decode step sees (its weights do not fit in
L2).

    python bench/q4_decode_sweep.py [--n 96] [--shapes 2048x3072,...] [--out bench/results/q4_decode.json]
    python bench/q4_decode_sweep.py --scheme int8      # the int8 kernel (BLOCK_K 128 and 256)
    python bench/q4_decode_sweep.py --dry-run     # CPU interpreter, tiny shapes, 4 configs (a smoke test)
    python bench/q4_decode_sweep.py --shapes 2048x3072 --flags '[{}, {"ROPE": 64}]'   # each config under each set
                                  # of kernel flags (ROPE: the tile order of RoPE in the epilogue, see wq_gemm.py)

Prints, per shape (K x N): the default's cold µs, the best config and its cold µs, and the top 5; a table last.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import peaks  # noqa: E402 - bench/peaks.py: the device's measured copy bandwidth (the floor)
from quant_linear import cold_copies_us, make_problem, precompile, rel_err, short_config  # noqa: E402
from tilecraft.quant import make_kernel  # noqa: E402
from tilecraft.quant.formats import QuantError  # noqa: E402

SCHEMES = {"int4": "int4_weight_only", "int8": "int8_weight_only"}
SHAPES = "2048x3072,2048x2048,2048x11264,5632x2048,2048x32000"  # K x N: qkv, o, gate/up, down, lm_head


GRID = {"bn": [32, 64, 128, 256], "warps": [2, 4, 8], "trans": [0, 1], "split": [1, 2, 4, 8, 16],
        "stages": [2, 3, 4, 6], "asm": [0, 1]}


def grid(bk: int = 128, values: dict = GRID) -> list[dict]:
    """The decode configs worth timing: 16-row tiles, one int4 group per 128-long chunk (scale on the dot's
    result), the weight tile on either side of the dot, int4's ASM knob (codes to pairs in inline PTX; refused
    for int8 and in the interpreter, so such points drop out there). (The 2026-12-03 H200 runs, in bench/results/
    h200-2026-12-03c, also swept a ZPOST knob, the int4 zero point after the dot; it lost and was removed.)"""
    out = []
    for bn, w, tr, sk, st, asm in itertools.product(*(values[k] for k in GRID)):
        if bn * bk // (32 * w) > 256:  # dequantized weights per thread: past ~256 they spill
            continue
        out.append({"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "num_warps": w,
                    "num_stages": st, "TRANS": bool(tr), "SCALE_W": False, **({"ASM": True} if asm else {})})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=96, help="configs sampled from the grid (plus the default)")
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--scheme", choices=sorted(SCHEMES), default="int4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/q4_decode.json")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--flags", default="[{}]", help="JSON list of constexpr flag sets; every config runs under each")
    for k, v in GRID.items():
        ap.add_argument(f"--{k}", default=",".join(map(str, v)), help="grid values (comma-separated)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    dev = "cpu" if dry else "cuda"
    shapes = [tuple(map(int, s.split("x"))) for s in ("64x64,128x96" if dry else args.shapes).split(",")]
    scheme = SCHEMES[args.scheme]
    group = (32 if dry else 128) if args.scheme == "int4" else 0
    values = {k: [int(v) for v in getattr(args, k).split(",")] for k in GRID}
    full = grid(group, values) if group else grid(32, values) if dry else grid(128, values) + grid(256, values)
    sample = random.Random(args.seed).sample(full, 4 if dry else min(args.n, len(full)))
    bandwidth = peaks.measure(cuda=not dry)["bandwidth"]
    t0, rows = time.time(), []
    for K, N in shapes:
        M = args.m
        x, _, qw, w_deq = make_problem(scheme, M, K, N, group, torch.bfloat16, dev)
        ref = (x.float() @ w_deq.t()).to(torch.bfloat16)
        k = make_kernel(scheme, M, N, K, torch.bfloat16, group)
        cfgs = [dict(k.default)]
        for c in sample:
            if c in cfgs or K < c["SPLIT_K"] * c["BLOCK_K"]:
                continue
            try:
                k.check_config(c)
            except QuantError:
                continue
            cfgs.append(c)
        cfgs = [{**c, **f} for c in cfgs for f in json.loads(args.flags)]
        zeros = qw.zeros if qw.zeros is not None else torch.zeros(1, dtype=torch.uint8, device=dev)
        args_ = [x, qw.qweight, qw.scales, zeros, torch.zeros(1, dtype=x.dtype, device=dev),
                 torch.empty(M, N, dtype=x.dtype, device=dev)]
        precompile(k, args_, cfgs, dry)
        timed = []
        for c in cfgs:
            out = torch.empty(M, N, dtype=x.dtype, device=dev)
            try:
                k.launch([*args_[:-1], out], c)
                err = rel_err(out, ref)
                if err > 2e-2:
                    raise AssertionError(f"rel err {err:.1e}")
                us = float("nan") if dry else cold_copies_us(
                    lambda q, c=c: k.launch([x, q, qw.scales, zeros, args_[4], out], c), qw.qweight)
            except Exception as e:  # noqa: BLE001 - reported per config, the sweep goes on
                print(f"  {K}x{N} {short_config(c)}: failed: {str(e).splitlines()[0][:120]}", flush=True)
                continue
            timed.append({"config": c, "cold_us": us, "rel_err": err})
        timed.sort(key=lambda r: r["cold_us"])
        default = next((r for r in timed if r["config"] == cfgs[0]), None)
        floor = N * K * (0.5 if args.scheme == "int4" else 1) / bandwidth * 1e6  # µs at the measured copy rate
        row = {"K": K, "N": N, "M": M, "configs": len(cfgs), "default": default, "top": timed[:8], "all": timed,
               "floor_us": floor}
        rows.append(row)
        print(f"{K}x{N}: {len(timed)}/{len(cfgs)} configs ok, default {default and default['cold_us']:.1f} us, "
              f"best {timed[0]['cold_us']:.1f} us {short_config(timed[0]['config'])} [{time.time() - t0:.0f}s]",
              flush=True)
        for r in timed[:5]:
            print(f"    {r['cold_us']:6.1f}  {short_config(r['config'])}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # after each shape: a timeout keeps the rest
        Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name() if not dry else "cpu",
                                              "rows": rows, "dry_run": dry}, indent=1))
    print(f"\n{args.scheme} decode, M={args.m}, cold µs (floor at the measured {bandwidth / 1e12:.2f} TB/s)")
    print(f"{'KxN':>12} {'floor':>6} {'default':>8} {'best':>7}  best config")
    for r in rows:
        d = r["default"]["cold_us"] if r["default"] else float("nan")
        print(f"{r['K']:>5}x{r['N']:<6} {r['floor_us']:6.1f} {d:8.1f} {r['top'][0]['cold_us']:7.1f}  "
              f"{short_config(r['top'][0]['config'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
