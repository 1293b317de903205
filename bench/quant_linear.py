"""Weight-only quantized linear (int8, int4 g128, fp8 on Hopper) and conv-BN-ReLU: tilecraft vs torch.

For each (scheme, M, K, N): tilecraft's kernels (best of a small config sweep incl. the heuristic default; every
config is checked against the float32 dequantized reference), bf16 cuBLAS (x @ w.t()), Inductor on the plain
dequantize-then-matmul code, and the bandwidth floor (quantized weight bytes / the device's copy bandwidth, measured
at the start by bench/peaks.py). Then the conv3x3-BN-ReLU residual block of ANCHORS.md (fp16, 32x64x56x56, eval):
eager vs Inductor vs tilecraft.compile.

    python bench/quant_linear.py [--out bench/results/quant_linear.json] [--sweep 12]
    python bench/quant_linear.py --quick        # issue 15's rows: int8/int4, M=1,16,64,256,2048, 4096x4096 and
                                                # 4096x11008, 3 configs each, no Inductor/conv (~3 min on an H200)
    python bench/quant_linear.py --dry-run      # CPU, Triton interpreter, tiny shapes (a smoke test)
    python bench/quant_linear.py --large-m      # M=2048 prefill GEMMs (2048x5632, 5632x2048, 2048x2048): each
        # large-M wq_gemm candidate, int8 and int4 g128, checked and timed against cuBLAS bf16 and
        # dequantize+cuBLAS; a table last (~1-2 min on an H200; --dry-run: tiny, interpreter)
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
import zlib
from pathlib import Path

if "--dry-run" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/peaks.py, also when loaded by path

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peaks  # noqa: E402 - bench/peaks.py: the device's measured copy bandwidth and matmul rate
import tilecraft  # noqa: E402
from tilecraft.quant import config_space, make_kernel, quantize_weight  # noqa: E402
from tilecraft.quant.formats import QuantError, dequantize, quantize_fp8_activation, unpack_int4  # noqa: E402


def bench_ms(fn, dry: bool) -> float:
    """Median ms: triton.testing.do_bench on GPU; a short wall-clock loop when interpreting (meaningless)."""
    if dry:
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))


def cold_gpu_us(make_fn, nbytes: int, rounds: int = 2) -> float:
    """GPU time per call with the weights cold in L2 (H100: 50 MB): make_fn(i) gives a call on the i-th copy of
    the weights; enough copies rotate that no call finds its weights cached. Kernel time by the torch profiler
    (every kernel of the call, a split-K's zeroing and cast included), so no CPU launch cost counts."""
    from tilecraft.testing import gpu_profile

    copies = max(2, -(-3 * 50 * 2**20 // max(nbytes, 1)))
    fns = [make_fn(i) for i in range(copies)]

    def sweep():
        for f in fns:
            f()

    return sum(t for _, t in gpu_profile(sweep, n=rounds)) / copies


def cold_copies_us(call, t: torch.Tensor) -> float:
    """cold_gpu_us of call(copy) over fresh copies of the tensor t (a weight; its bytes rotate out of L2)."""
    return cold_gpu_us(lambda i: functools.partial(call, t.clone()), t.numel() * t.element_size())


def rel_err(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


def curated_configs(template: str, M: int, scheme: str = "") -> list[dict]:
    """Hand-picked points worth timing first: for the M=1 GEMV, few rows per program and long K chunks (many
    programs in flight, each streaming 2-8 KB); for the small-M GEMMs, thin M tiles with long K chunks (int4:
    long chunks need SCALE_W, the group scales applied to the weight tile)."""
    if template == "wq_gemv" and M == 1:
        return [{"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": st}
                for bn, bk, w, st in [(8, 1024, 4, 2), (4, 2048, 4, 1), (2, 2048, 4, 1), (4, 1024, 4, 1),
                                      (8, 1024, 4, 3), (8, 2048, 4, 2), (16, 512, 4, 2), (4, 4096, 4, 1),
                                      (8, 512, 4, 2), (16, 1024, 8, 2), (2, 4096, 4, 1)]]
    if template == "wq_gemv":
        return [{"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": 2}
                for bn, bk, w in [(16, 256, 4), (8, 512, 4)]]
    sw = {"SCALE_W": True} if scheme == "int4_weight_only" else {}
    # (tiles keep about 64 dequantized weights per thread: BLOCK_N x BLOCK_K / (32 num_warps))
    if template == "wq_gemm" and M <= 16:  # thin N tiles (the H100's best at 4096x4096) with split-K to fill the
        # device on a model's smaller weights (2048x512: 16 tiles of 32); the weight tile on the dot's left (TRANS)
        return [{"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "num_warps": w, "num_stages": st,
                 "TRANS": tr, **sw}
                for bn, bk, sk, tr, w, st in [(32, 256, 2, False, 4, 3), (32, 256, 4, False, 4, 3),
                                              (16, 256, 4, False, 4, 3), (32, 128, 8, False, 4, 3),
                                              (32, 256, 1, False, 4, 3), (64, 256, 4, True, 8, 3),
                                              (64, 128, 4, True, 4, 4), (128, 128, 4, True, 8, 3),
                                              (16, 512, 2, False, 4, 3), (64, 256, 2, True, 8, 4)]] + (
            # int4 with the group scale on the dot's result: codes become 16-bit floats by bit patterns
            # (wq_gemm.py), chunks of one group
            [{"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "num_warps": w, "num_stages": st,
              "TRANS": tr, "SCALE_W": False}
             for bn, bk, sk, tr, w, st in [(32, 128, 4, False, 4, 3), (32, 128, 2, False, 4, 4),
                                           (64, 128, 4, False, 4, 3), (64, 128, 2, True, 4, 4),
                                           (128, 128, 2, True, 8, 3), (128, 128, 1, True, 4, 4),
                                           (64, 128, 4, True, 4, 4), (32, 128, 8, False, 4, 3)]]
            if scheme == "int4_weight_only" else [])
    if template == "wq_gemm" and M <= 64:
        return [{"BLOCK_M": 64, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "num_warps": w, "num_stages": st,
                 "TRANS": tr, **sw}
                for bn, bk, sk, tr, w, st in [(128, 128, 1, True, 8, 3), (64, 128, 2, True, 4, 3),
                                              (64, 256, 1, False, 8, 3), (128, 64, 2, True, 4, 3)]]
    if template == "wq_gemm":  # large M: bf16 wgmma on dequantized weight tiles (the large_m_configs tiles)
        from tilecraft.quant.kernels import LARGE_M_TILES

        return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": 1, "num_warps": w, "num_stages": st,
                 "TRANS": True, **sw} for bm, bn, bk, w, st in LARGE_M_TILES]
    return []


def sample_configs(kernel, n: int, seed: int) -> list[dict]:
    """The heuristic default, the curated points that the kernel accepts, then valid random points of its config
    space, n in all."""
    space, r = kernel.info["space"], random.Random(seed)
    out, seen = [], set()

    def add(c):
        key = tuple(sorted(c.items()))
        if key in seen or len(out) >= n:
            return
        seen.add(key)
        try:
            kernel.check_config(c)
        except QuantError:
            return
        out.append(c)

    add(kernel.default_config())
    for c in curated_configs(kernel.template, kernel.shapes["M"], kernel.scheme):
        add(c)
    for _ in range(n * 20):
        add({k: r.choice(v) for k, v in space.items()})
    return out


def precompile(kernel, args, configs, dry: bool) -> None:
    """Launch every config once from a thread pool, so Triton compiles them concurrently (ptxas runs outside the
    GIL) before the timed loop, which then only checks and times. Each thread writes its own output; failures
    are left to the loop, which reports them."""
    if dry or len(configs) < 2:
        return
    from concurrent.futures import ThreadPoolExecutor

    def one(cfg):
        try:
            kernel.launch([*args[:-1], torch.empty_like(args[-1])], cfg)
        except Exception:  # noqa: BLE001 - the timed loop runs this config again and counts the failure
            pass

    one(configs[0])  # the kernel's per-device caches are made here, not racing in the threads
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, configs[1:]))
    torch.cuda.synchronize()


def dequant_tiles_us(scheme, qw, group, dtype, tiles: list) -> dict:
    """Cold GPU µs of the 'aten' backend's dequantize kernel alone, per (BLOCK_N, BLOCK_K) tile choice."""
    from tilecraft.quant.kernels import dequantize_into

    return {f"{bn}x{bk}": cold_copies_us(lambda q, t=(bn, bk): dequantize_into(
        scheme, q, qw.scales, qw.zeros, group, dtype, t), qw.qweight) for bn, bk in tiles}


def make_problem(scheme, M, K, N, group, dtype, dev):
    """(x [M, K], the float weight [N, K] on the CPU, its quantization on dev, that dequantized in float32),
    seeded by the shape."""
    g = torch.Generator(device="cpu").manual_seed(M * 7 + N)
    w = (torch.randn(N, K, generator=g) * 0.02)
    x = torch.randn(M, K, generator=g).to(dtype).to(dev)
    qw = quantize_weight(w, scheme, group)
    qw.qweight, qw.scales = qw.qweight.to(dev), qw.scales.to(dev)
    qw.zeros = qw.zeros.to(dev) if qw.zeros is not None else None
    return x, w, qw, dequantize(qw)


def linear_case(scheme, M, K, N, group, dtype, dev, n_cfg, dry, deadline, bandwidth, inductor=True,
                cold_top=4, dequant_tiles=(), dequant_chunks=()) -> dict:
    x, w, qw, w_deq = make_problem(scheme, M, K, N, group, dtype, dev)
    if scheme == "fp8":
        xq, xs = quantize_fp8_activation(x)
        ref = ((xq.float() * xs[:, None]) @ w_deq.t()).to(dtype)
        wbytes = N * K
    else:
        ref = (x.float() @ w_deq.t()).to(dtype)
        wbytes = N * K if scheme == "int8_weight_only" else N * K // 2
    row = {"scheme": scheme, "M": M, "K": K, "N": N, "group": group if scheme.startswith("int4") else 0,
           "floor_us": wbytes / bandwidth * 1e6}
    # ---- tilecraft kernels: sweep configs of the applicable templates
    templates = ["fp8_gemm"] if scheme == "fp8" else (["wq_gemv", "wq_gemm"] if M <= 2 else ["wq_gemm"])
    tried, failed, timings = 0, 0, []
    for ti, template in enumerate(templates):
        k = make_kernel(scheme, M, N, K, dtype, group if scheme.startswith("int4") else 0, False, template,
                        fp8_per_row=(True, True))
        out = torch.empty(M, N, dtype=dtype, device=dev)
        dummy = torch.empty(1, dtype=torch.uint8, device=dev)
        if scheme == "fp8":
            args = [xq, qw.qweight, xs, qw.scales, torch.empty(1, dtype=dtype, device=dev), out]
        else:
            args = [x, qw.qweight, qw.scales, qw.zeros if qw.zeros is not None else dummy,
                    torch.empty(1, dtype=dtype, device=dev), out]
        per = max(1, n_cfg // len(templates)) if len(templates) > 1 else n_cfg
        if template == "wq_gemv" and M > 2:  # a multi-row GEMV: only its curated points (slow to compile)
            per = 1 + len(curated_configs(template, M, scheme))
        configs = sample_configs(k, per if time.perf_counter() < deadline else 1,
                                 seed=zlib.crc32(f'{scheme}/{template}/{M}'.encode()))
        precompile(k, args, configs, dry)
        for cfg in configs:
            tried += 1
            try:
                out.zero_()
                k.launch(args, cfg)
                err = rel_err(out, ref)
                if not err < (2e-2 if dtype != torch.float32 else 1e-4):
                    failed += 1
                    continue
                ms = bench_ms(lambda: k.launch(args, cfg), dry)
                out.zero_()
                k.launch(args, cfg)  # again after many launches (split-K's arrival counters must have reset)
                err = max(err, rel_err(out, ref))
                if not err < (2e-2 if dtype != torch.float32 else 1e-4):
                    print(f"  {scheme} M={M} {short_config(cfg)}: wrong after repeated launches ({err:.1e})")
                    failed += 1
                    continue
            except Exception as e:  # noqa: BLE001 - a config that does not compile or run is skipped
                failed += 1
                if tried == 1:
                    print(f"  default config failed for {scheme} M={M}: {type(e).__name__}: {e}", flush=True)
                continue
            timings.append((ms * 1e3, template, cfg, err, k, args))
    if timings:
        timings.sort(key=lambda r: r[0])
        row["top_configs"] = [{"us": t, "template": tp, "config": c} for t, tp, c, *_ in timings[:6]]
        if not dry:  # the few fastest by do_bench, re-timed with cold weights (what a decode step sees): the
            # winner is the fastest cold (do_bench's launch-inclusive times differ by less than their noise)
            def cold(kb, ab, cb):  # copies of the quantized weight; scales and zeros stay shared (small)
                return cold_copies_us(lambda q: kb.launch([ab[0], q, *ab[2:]], cb), ab[1])

            colds = [(cold(kb, ab, cb), us, tp, cb, err) for us, tp, cb, err, kb, ab in timings[:cold_top]]
            for entry, c in zip(row["top_configs"], colds):
                entry["cold_us"] = c[0]
            c_us, us, tp, cb, err = min(colds, key=lambda r: r[0])
            row.update(tilecraft_us=us, template=tp, config=cb, rel_err=err, tilecraft_cold_us=c_us)
        else:
            us, tp, cb, err = timings[0][:4]
            row.update(tilecraft_us=us, template=tp, config=cb, rel_err=err)
    row.update(configs_tried=tried, configs_failed=failed)
    # ---- bf16 cuBLAS on the float weight
    wb = w.to(dev).to(dtype)
    row["cublas_us"] = bench_ms(lambda: x @ wb.t(), dry) * 1e3
    if not dry:
        row["cublas_cold_us"] = cold_copies_us(lambda wc: x @ wc.t(), wb)
    if not dry and scheme == "int4_weight_only" and M <= 64 and dtype == torch.bfloat16:
        row.update(tinygemm_case(x, qw, ref, N, K, group))
    if M >= 256 and scheme != "fp8":  # the compiled qmatmul's "aten" backend: dequantize, then cuBLAS
        from tilecraft.quant.kernels import dequant_matmul

        def deq_mm(q, chunk=None):
            return dequant_matmul(scheme, x, q, qw.scales, qw.zeros, group, chunk_bytes=chunk)

        row["dequant_mm_rel_err"] = rel_err(deq_mm(qw.qweight), ref)
        if not dry:
            row["dequant_mm_cold_us"] = cold_copies_us(deq_mm, qw.qweight)
            # the dequantize kernel alone against its floor (read the packed weight, write the float one)
            row["dequant_floor_us"] = (qw.qweight.numel() + N * K * dtype.itemsize) / bandwidth * 1e6
            if dequant_tiles:
                row["dequant_tiles_us"] = dequant_tiles_us(scheme, qw, group, dtype, dequant_tiles)
            for mb in dequant_chunks:  # in blocks of weight rows of about mb MB as floats (L2-sized)
                row.setdefault("dequant_mm_chunk_us", {})[str(mb)] = cold_copies_us(
                    lambda q, c=int(mb * 2**20): deq_mm(q, c), qw.qweight)
    # ---- Inductor on the plain dequantize-then-matmul code
    if not dry and scheme != "fp8" and inductor:
        try:
            if scheme == "int8_weight_only":
                fn = torch.compile(lambda x, q, s: x @ (q.to(x.dtype) * s[:, None].to(x.dtype)).t())
                call = lambda: fn(x, qw.qweight, qw.scales)  # noqa: E731
            else:
                def deq_mm(x, q, s, z):
                    codes = torch.stack([q & 15, q >> 4], dim=-1).reshape(N, K).to(x.dtype)
                    wd = (codes.reshape(N, K // group, group) - z[..., None].to(x.dtype)) * s[..., None].to(x.dtype)
                    return x @ wd.reshape(N, K).t()
                fn = torch.compile(deq_mm)
                call = lambda: fn(x, qw.qweight, qw.scales, qw.zeros)  # noqa: E731
            row["inductor_rel_err"] = rel_err(call(), ref)
            row["inductor_us"] = bench_ms(call, dry) * 1e3
        except Exception as e:  # noqa: BLE001
            row["inductor_error"] = f"{type(e).__name__}: {e}"[:200]
    return row


# the former default for M > 64 (TRANS False: the weight tile as the right operand, loaded without the pipeline):
# 125 us for int8 and 245 us for int4 at M=2048, 2048x5632, on an H200
FORMER_LARGE_M = {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "SPLIT_K": 1, "num_warps": 8, "num_stages": 3,
                  "TRANS": False}


def large_m_case(scheme, M, K, N, group, dtype, dev, dry) -> dict:
    """The prefill GEMM of issue 15: each large-M candidate config of wq_gemm (large_m_configs, then the former
    default) checked against the float32 dequantized reference and timed with cold weights, next to cuBLAS bf16
    on the float weight and the 'aten' backend (dequantize + cuBLAS, the compiled default for M >= 256)."""
    from tilecraft.quant.kernels import dequant_matmul, large_m_configs

    x, w, qw, w_deq = make_problem(scheme, M, K, N, group, dtype, dev)
    ref = (x.float() @ w_deq.t()).to(dtype)
    k = make_kernel(scheme, M, N, K, dtype, group, False, "wq_gemm")
    out = torch.empty(M, N, dtype=dtype, device=dev)
    z = qw.zeros if qw.zeros is not None else torch.empty(1, dtype=torch.uint8, device=dev)
    args = [x, qw.qweight, qw.scales, z, torch.empty(1, dtype=dtype, device=dev), out]
    former = {**FORMER_LARGE_M, **({"SCALE_W": True} if group else {})}
    configs = large_m_configs(scheme, M, N, K, group) + [former]
    precompile(k, args, configs, dry)

    def timed(call, t) -> float:  # µs of call(copy of t): cold weights on the GPU, one wall-clock call when dry
        return bench_ms(functools.partial(call, t), True) * 1e3 if dry else cold_copies_us(call, t)

    row = {"scheme": scheme, "M": M, "K": K, "N": N, "group": group, "configs": []}
    tol = 2e-2 if dtype != torch.float32 else 1e-4
    for cfg in configs:
        entry = {"config": cfg, "former_default": cfg is former}
        try:
            out.fill_(float("nan"))
            k.launch(args, cfg)
            entry["rel_err"] = rel_err(out, ref)
            entry["ok"] = entry["rel_err"] < tol  # (NaN, from an unwritten output, is not)
            entry["us"] = timed(lambda q, c=cfg: k.launch([x, q, *args[2:]], c), qw.qweight)
        except Exception as e:  # noqa: BLE001 - a config that does not compile or run is reported
            entry.update(ok=False, error=f"{type(e).__name__}: {e}"[:300])
        row["configs"].append(entry)
    wb = w.to(dev).to(dtype)
    row["cublas_us"] = timed(lambda wc: x @ wc.t(), wb)

    def deq_mm(q):
        return dequant_matmul(scheme, x, q, qw.scales, qw.zeros, group)

    row["dequant_mm_rel_err"] = rel_err(deq_mm(qw.qweight), ref)
    row["dequant_mm_us"] = timed(deq_mm, qw.qweight)
    return row


def print_large_m(rows) -> None:
    """The large-M table: per problem cuBLAS bf16, dequantize + cuBLAS, then each config; µs and x cuBLAS."""
    print("\nlarge-M quantized GEMM (cold GPU us per call; x cuBLAS = us / cuBLAS bf16; goal <= 1.05, issue 15 "
          "needs < the deq+mm row)")
    print(f"{'scheme':<7} {'M':>5} {'KxN':>10}  {'what':<30} {'us':>8} {'x cuBLAS':>8} {'rel err':>8}")
    for r in rows:
        name = r["scheme"].split("_")[0] + (f"g{r['group']}" if r["group"] else "")
        head = f"{name:<7} {r['M']:>5} {str(r['K']) + 'x' + str(r['N']):>10}  "
        cb = r["cublas_us"]
        print(head + f"{'cuBLAS bf16':<30} {cb:>8.1f} {1:>8.2f}")
        print(head + f"{'dequantize + cuBLAS':<30} {r['dequant_mm_us']:>8.1f} {r['dequant_mm_us'] / cb:>8.2f} "
              f"{r['dequant_mm_rel_err']:>8.1e}")
        for e in r["configs"]:
            what = short_config(e["config"]) + (" (former)" if e["former_default"] else "")
            if "error" in e:
                print(head + f"{what:<30} ERROR {e['error'][:120]}")
                continue
            flag = "" if e["ok"] else "  WRONG"
            print(head + f"{what:<30} {e['us']:>8.1f} {e['us'] / cb:>8.2f} {e['rel_err']:>8.1e}{flag}")
    for r in rows:
        good = [e for e in r["configs"] if e.get("ok")]
        if good:
            best = min(good, key=lambda e: e["us"])
            print(f"best {r['scheme'].split('_')[0]} {r['K']}x{r['N']}: {short_config(best['config'])} "
                  f"{best['us']:.1f} us = {best['us'] / r['cublas_us']:.2f}x cuBLAS "
                  f"(dequantize + cuBLAS {r['dequant_mm_us'] / r['cublas_us']:.2f}x)")


def tinygemm_case(x, qw, ref, N, K, group) -> dict:
    """ATen's int4 kernel (`torch._weight_int4pack_mm`, "tinygemm": w = (q - 8) * scale + zero, bfloat16 scales
    and zeros) on our weight, cold: a reference point for the int4 GEMM at small M."""
    try:
        codes = unpack_int4(qw.qweight).to(torch.int32)  # [N, K] codes 0..15
        packed = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)  # ATen's order: even k in the high nibble
        wp = torch._convert_weight_to_int4pack(packed, 8)
        s, z = qw.scales.float(), qw.zeros.float()  # [N, K/group]
        sz = torch.stack([s, (8 - z) * s], -1).transpose(0, 1).contiguous().to(torch.bfloat16)  # [K/g, N, 2]
        out = torch._weight_int4pack_mm(x, wp, group, sz)
        return {"tinygemm_rel_err": rel_err(out, ref),
                "tinygemm_cold_us": cold_copies_us(lambda w2: torch._weight_int4pack_mm(x, w2, group, sz), wp)}
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return {"tinygemm_error": f"{type(e).__name__}: {e}"[:200]}


class GatedMLP(nn.Module):
    """x + down(silu(gate(x)) * up(x)): a LLaMA MLP with its residual, for the compile-path check."""

    def __init__(self, d, h):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d)

    def forward(self, x):
        return x + self.down(F.silu(self.gate(x)) * self.up(x))


def compile_case(dev, dry) -> list[dict]:
    """tilecraft.compile(m, quantize=...) on a LLaMA-sized MLP: the fused qmatmul kernels (default configs) against
    the quantized copy's eager dequantized reference, at decode (M=16) and prefill (M=2048) sizes; GPU time."""
    d, h, ms = (64, 128, [1, 16]) if dry else (4096, 11008, [1, 16, 2048])
    dtype = torch.float32 if dry else torch.bfloat16
    torch.manual_seed(0)
    model = GatedMLP(d, h).eval().to(dev, dtype)
    rows, xs = [], {M: torch.randn(M, d, device=dev, dtype=dtype) for M in ms}
    bf16_us = {}
    if not dry:  # the float model through tilecraft (cuBLAS GEMMs by default): the baseline of "x bf16"
        from tilecraft.testing import gpu_profile

        torch._dynamo.reset()
        cf = tilecraft.compile(model)
        with torch.no_grad():
            for M, x in xs.items():
                bf16_us[M] = sum(t for _, t in gpu_profile(lambda: cf(x)))  # noqa: B023
    for scheme in ("int8_weight_only", "int4_weight_only"):
        torch._dynamo.reset()
        c = tilecraft.compile(model, quantize=scheme)
        for M, x in xs.items():
            with torch.no_grad():
                got, got2, ref = c(x), c(x), c.model(x)
            rec = c.report.graphs[-1]
            failed = [s.kernel.name for s in rec.program.steps if getattr(s, "failed", False)]
            row = {"scheme": scheme, "M": M, "rel_err": max(rel_err(got, ref), rel_err(got2, ref)),
                   "kernels": [f"{k.template} {k.config.get('BACKEND', '')} {short_config(k.config)} {k.info['ops']}"
                               for k in rec.kernels],
                   "failed": failed}
            if not dry:
                from tilecraft.testing import gpu_profile

                with torch.no_grad():
                    row["gpu_us"] = sum(t for _, t in gpu_profile(lambda: c(x)))  # noqa: B023
                    row["bf16_gpu_us"] = bf16_us[M]
            rows.append(row)
            ratio = row["gpu_us"] / row["bf16_gpu_us"] if row.get("gpu_us") else None
            print(f"compile {scheme} M={M}: rel err {row['rel_err']:.1e} vs its dequantized reference, "
                  f"fell back: {failed or 'none'}; GPU {fmt(row.get('gpu_us'))} us, bf16 "
                  f"{fmt(row.get('bf16_gpu_us'))} us, x bf16 {fmt(ratio, '.2f')}; "
                  f"{[k.split(' [')[0] for k in row['kernels']]}", flush=True)
    return rows


class ConvBNReLUBlock(nn.Module):
    """relu(x + bn(conv3x3(x))): the conv-BN-ReLU residual block of ANCHORS.md."""

    def __init__(self, c):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))


def conv_case(dev, dry) -> dict:
    shape = (2, 8, 8, 8) if dry else (32, 64, 56, 56)
    dtype = torch.float32 if dry else torch.float16
    torch.manual_seed(0)
    model = ConvBNReLUBlock(shape[1]).eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    model = model.to(dev, dtype)
    x = torch.randn(*shape, device=dev, dtype=dtype)
    n, c, h, w = shape  # floor: the 3x3 conv's FLOPs, or x read and the result written, on this device
    floor = peaks.floor_ms(2 * n * c * h * w * 2, 2 * 9 * n * c * c * h * w, peaks.measure(cuda=not dry))
    row = {"workload": f"convbnrelu_{'x'.join(map(str, shape))}", "floor_ms": None if dry else floor}
    with torch.no_grad():
        ref = model(x)
        row["eager_ms"] = bench_ms(lambda: model(x), dry)
        if not dry:
            ind = torch.compile(model)
            row["inductor_rel_err"] = rel_err(ind(x), ref)
            row["inductor_ms"] = bench_ms(lambda: ind(x), dry)
        tc = tilecraft.compile(model)
        row["tilecraft_rel_err"] = rel_err(tc(x), ref)
        row["tilecraft_ms"] = bench_ms(lambda: tc(x), dry)
        row["tilecraft_ops"] = tc.report.graphs[0].ops if tc.report.graphs else {}
        if not dry:  # GPU time per call and its kernels (torch profiler): the pass's layout choice vs forced NHWC
            from tilecraft.testing import gpu_profile

            torch._dynamo.reset()
            tcl = tilecraft.compile(model, channels_last=True)
            row["tilecraft_nhwc_rel_err"] = rel_err(tcl(x), ref)
            row["tilecraft_nhwc_ms"] = bench_ms(lambda: tcl(x), dry)
            for label, fn in (("inductor", ind), ("tilecraft", tc), ("tilecraft_nhwc", tcl)):
                prof = gpu_profile(lambda: fn(x))  # noqa: B023
                row[f"{label}_gpu_ms"] = sum(t for _, t in prof) / 1e3
                row[f"{label}_kernels_us"] = [(k[:60], round(t, 1)) for k, t in prof]
    return row


def short_config(c) -> str:
    """e.g. 16x128x256 sk4 T SW w4s3 (BLOCK_M x BLOCK_N x BLOCK_K, split-K, TRANS, SCALE_W, ASM, warps, stages)."""
    if not c:
        return "-"
    tile = "x".join(str(c[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in c)
    flags = [f"sk{c['SPLIT_K']}"] if c.get("SPLIT_K", 1) > 1 else []
    flags += [f for f, k in (("T", "TRANS"), ("SW", "SCALE_W"), ("ASM", "ASM")) if c.get(k)]
    flags += [f"{k}={c[k]}" for k in ("ROPE", "PAIR") if c.get(k)]
    return " ".join([tile] + flags + [f"w{c.get('num_warps')}s{c.get('num_stages')}"])


def fmt(v, spec=".1f"):
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="", help="default bench/results/quant_linear.json (--large-m: "
                    "quant_linear_large_m.json)")
    ap.add_argument("--dry-run", action="store_true", help="CPU interpreter, tiny shapes")
    ap.add_argument("--sweep", type=int, default=12, help="configs per problem (incl. the default)")
    ap.add_argument("--schemes", default="int8,int4,fp8", help="comma list of int8, int4, fp8")
    ap.add_argument("--ms", default="", help="comma list of M values (default 1,16,64,256,2048)")
    ap.add_argument("--shapes", default="", help="comma list of KxN weight shapes (default 4096x4096,4096x11008; "
                    "--large-m: 2048x5632,5632x2048,2048x2048)")
    ap.add_argument("--large-m", action="store_true", help="only the large-M GEMM: every large_m_configs "
                    "candidate (int8, int4 g128) at M=2048 (or --ms) against cuBLAS bf16 and dequantize+cuBLAS")
    ap.add_argument("--no-conv", action="store_true")
    ap.add_argument("--no-inductor", action="store_true", help="skip the Inductor column (compiles per row)")
    ap.add_argument("--quick", action="store_true", help="int8,int4 only, 3 configs a row, no Inductor, no conv")
    ap.add_argument("--budget-s", type=float, default=240.0, help="after this, only default configs are timed")
    ap.add_argument("--dequant-chunks", default="", help="M >= 256: also time dequantize+cuBLAS in blocks of "
                    "weight rows of these many MB as floats, e.g. 4,8,16 (see tilecraft.quant.kernels.dequant_matmul)")
    ap.add_argument("--dequant-tiles", default="", help="M >= 256: also time the dequantize kernel alone for these "
                    "BLOCK_NxBLOCK_K tiles, e.g. 32x128,64x128,64x256 (the default tiles: DEQUANT_TILES)")
    args = ap.parse_args(argv)
    if args.quick:
        args.schemes, args.sweep, args.no_inductor, args.no_conv = "int8,int4", min(args.sweep, 3), True, True
        args.budget_s = min(args.budget_s, 150.0)  # then default configs only: the whole run stays near 3 minutes
    dry = args.dry_run
    args.out = args.out or str(Path(__file__).parent / "results" /
                               ("quant_linear_large_m.json" if args.large_m else "quant_linear.json"))
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: use --dry-run", file=sys.stderr)
        return 2
    dev = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    print(peaks.describe(peaks.measure(cuda=not dry)), flush=True)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    shapes = args.shapes or ("2048x5632,5632x2048,2048x2048" if args.large_m else "4096x4096,4096x11008")
    shapes = ([(128, 48)] if args.large_m else [(64, 48)]) if dry else [
        tuple(int(v) for v in s.split("x")) for s in shapes.split(",")]
    ms_list = [int(m) for m in args.ms.split(",")] if args.ms else ([1, 16, 64, 256, 2048] if not dry else [1, 16, 32])
    bandwidth = peaks.measure(cuda=not dry)["bandwidth"]
    n_cfg = 3 if dry else args.sweep
    schemes = [("int8_weight_only", 0), ("int4_weight_only", 32 if dry else 128)]
    hopper = not dry and torch.cuda.get_device_capability() >= (9, 0)
    if hopper:
        schemes.append(("fp8", 0))
    schemes = [s for s in schemes if s[0].split("_")[0] in args.schemes.split(",")]
    if args.large_m:
        schemes = [s for s in schemes if s[0] != "fp8"]
        ms = [int(m) for m in args.ms.split(",")] if args.ms else [130 if dry else 2048]
        rows = [large_m_case(scheme, M, K, N, group, dtype, dev, dry) for K, N in shapes for scheme, group in schemes
                for M in ms]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"device": "cpu (interpreter)" if dry else torch.cuda.get_device_name(),
                                              "large_m": rows, "seconds": time.perf_counter() - t_start}, indent=1))
        print(f"wrote {args.out} after {time.perf_counter() - t_start:.0f}s")
        print_large_m(rows)
        return 0 if all(e.get("ok") for r in rows for e in r["configs"]) else 1
    rows = []
    for K, N in shapes:
        for scheme, group in schemes:
            for M in ms_list:
                t0 = time.perf_counter()
                row = linear_case(scheme, M, K, N, group, dtype, dev, n_cfg, dry, deadline, bandwidth,
                                  not args.no_inductor, 2 if args.quick else 4,
                                  [tuple(int(v) for v in t.split("x")) for t in args.dequant_tiles.split(",") if t],
                                  [float(c) for c in args.dequant_chunks.split(",") if c])
                row["bench_s"] = time.perf_counter() - t0
                rows.append(row)
                print(f"done {scheme} M={M} K={K} N={N} in {row['bench_s']:.1f}s", flush=True)
    compiled_rows = compile_case(dev, dry)
    conv = None if args.no_conv else conv_case(dev, dry)
    device = "cpu (interpreter)" if dry else torch.cuda.get_device_name()
    result = {"device": device, "torch": torch.__version__, "dry_run": dry, "peaks": peaks.measure(cuda=not dry),
              "linear": rows, "compile": compiled_rows, "conv": conv,
              "seconds": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    print(f"\nwrote {args.out} after {result['seconds']:.0f}s; device {device}{' (timings meaningless: interpreter)' if dry else ''}")
    print(f"\nx floor = cold GPU time / (weight bytes / {bandwidth / 1e12:.2f} TB/s); x bf16 = cold / cuBLAS bf16 cold")
    print("deq+mm = the compiled qmatmul's 'aten' backend (dequantize kernel + cuBLAS), the default for M >= 256")
    print(f"{'scheme':<8} {'M':>4} {'KxN':>10} {'floor us':>8} {'cold us':>8} {'x floor':>7} {'cuBLAS cold':>11} "
          f"{'x bf16':>6} {'deq+mm x bf16':>13} {'do_bench':>8} {'cuBLAS':>7} {'Inductor':>8} {'rel err':>8}  "
          f"template config")
    for r in rows:
        name = r["scheme"].split("_")[0] + (f"g{r['group']}" if r["group"] else "")
        cold, cb = r.get("tilecraft_cold_us"), r.get("cublas_cold_us")
        print(f"{name:<8} {r['M']:>4} {r['K']}x{r['N']:<5} {fmt(r['floor_us']):>8} {fmt(cold):>8} "
              f"{fmt(cold / r['floor_us'] if cold else None, '.2f'):>7} {fmt(cb):>11} "
              f"{fmt(cold / cb if cold and cb else None, '.2f'):>6} "
              f"{fmt(r['dequant_mm_cold_us'] / cb if r.get('dequant_mm_cold_us') and cb else None, '.2f'):>13} "
              f"{fmt(r.get('tilecraft_us')):>8} "
              f"{fmt(r['cublas_us']):>7} {fmt(r.get('inductor_us')):>8} {fmt(r.get('rel_err'), '.1e'):>8}  "
              f"{r.get('template', '-')} {short_config(r.get('config'))}")
    for r in rows:
        if "tinygemm_cold_us" in r or "tinygemm_error" in r:
            print(f"ATen int4 (tinygemm) M={r['M']} {r['K']}x{r['N']}: " + (
                f"cold {r['tinygemm_cold_us']:.1f} us, rel err {r['tinygemm_rel_err']:.1e}" if "tinygemm_cold_us" in r
                else r["tinygemm_error"]))
        if r.get("dequant_floor_us"):
            tiles = ", ".join(f"{t} {us:.1f}" for t, us in r.get("dequant_tiles_us", {}).items())
            chunks = ", ".join(f"{c} MB {us:.1f}" for c, us in r.get("dequant_mm_chunk_us", {}).items())
            print(f"dequantize {r['scheme'].split('_')[0]} M={r['M']} {r['K']}x{r['N']}: floor "
                  f"{r['dequant_floor_us']:.1f} us" + (f"; cold us by tile: {tiles}" if tiles else "")
                  + f"; dequantize+cuBLAS {r['dequant_mm_cold_us']:.1f} us (cuBLAS bf16 {r['cublas_cold_us']:.1f})"
                  + (f", in row blocks: {chunks}" if chunks else ""))
    c = conv
    if c:
        print(f"\n{c['workload']}: eager {fmt(c['eager_ms'], '.4f')} ms, Inductor {fmt(c.get('inductor_ms'), '.4f')} ms, "
              f"tilecraft {fmt(c['tilecraft_ms'], '.4f')} ms (rel err {c['tilecraft_rel_err']:.1e}), "
              f"floor {fmt(c['floor_ms'], '.4f')} ms")
        for label in ("inductor", "tilecraft", "tilecraft_nhwc"):
            if f"{label}_gpu_ms" in c:
                print(f"  {label:15} GPU {c[label + '_gpu_ms']:.4f} ms per call: "
                      + ", ".join(f"{k} {t}" for k, t in c[label + "_kernels_us"]))
    ok = all("tilecraft_us" in r for r in rows) and all(
        r["rel_err"] < (2e-2 if not dry else 1e-4) and not r["failed"] for r in compiled_rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
