"""Features of (template, shapes, dtype, config, device) for the cost model.

Raw knobs (log2; the matmul variant flags 0/1), problem sizes (log2), derived quantities (tiles, waves over
the SM count, wave efficiency, arithmetic intensity, shared-memory bytes, register and occupancy estimates,
padding waste), a GEMM's analytic time estimate over its roofline floor (`gemm_analytic_log`, which the cost
model also uses as its prior score) and device properties (SM count, L2, bandwidth, peak rate, capability), so
that a model trained on one GPU can rank configs on another. Missing features are NaN (XGBoost treats them as
missing).

No template is named here: a template's family (gemm | reduction | pointwise) and weight bytes come from its
declaration (`spaces.register_template`); a template that adds knobs appends their names to `KNOBS` or `FLAGS`.
"""
from __future__ import annotations

import math

import numpy as np

from .device import DeviceInfo
from .spaces import gemm_acc_regs_per_thread, gemm_smem_bytes, itemsize, template_info

KNOBS = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "SPLIT_K", "num_warps", "num_stages", "XBLOCK", "RBLOCK"]
FLAGS = ["PERSISTENT", "TMA", "EPILOGUE_SUBTILE", "FLATTEN", "WARP_SPECIALIZE"]  # 0/1 knobs (the matmul's variant), raw
FAMILIES = ["gemm", "reduction", "pointwise"]
DERIVED = ["weight_itemsize", "log_M", "log_N", "log_K", "log_B", "log_rows", "log_cols", "log_numel", "itemsize",
           "programs_log", "waves", "wave_eff", "tail_frac", "tile_ai", "global_ai_log", "smem_kb", "smem_frac",
           "regs_per_thread", "blocks_per_sm", "occupancy", "pad_waste", "k_iters_log", "elems_per_thread_log",
           "single_pass", "chunks_log", "floor_compute_us_log", "floor_memory_us_log", "compute_bound", "analytic_log"]
DEVICE = ["dev_sm_count", "dev_l2_mb", "dev_bw_tbs", "dev_peak_tflops", "dev_cc", "dev_smem_kb"]
FEATURE_NAMES = [f"knob_{k}" for k in KNOBS + FLAGS] + [f"family_{t}" for t in FAMILIES] + DERIVED + DEVICE


def _log2(x: float) -> float:
    return math.log2(x) if x and x > 0 else float("nan")


L2_OVER_DRAM = 2.5  # L2 read bandwidth / DRAM bandwidth (Hopper: ~10 TB/s vs ~4 TB/s)
LOAD_LATENCY_S = 0.8e-6  # a global load's latency under load; num_stages - 1 loads in flight hide it


def gemm_analytic_log(shapes: dict, config: dict, isz: int, wsz: int, blocks: int, device: DeviceInfo,
                      peak_tflops: float, floor_s: float, dram_bytes: float) -> float:
    """log2(estimated time / roofline floor) of one GEMM config: the tiles run in waves of `blocks` programs per
    SM, each K step of a tile costs the largest of its MMA time (full tensor-core rate only with Hopper's wgmma:
    >= 4 warps and BLOCK_M a multiple of 64; half otherwise), its operand loads from L2 (shared by the SM's
    programs) and the load latency over the num_stages - 1 loads in flight; never below the DRAM traffic time.
    Crude on purpose: it orders tile shapes by waves, padding, per-step cost and pipelining depth across problems,
    and the trees learn what it misses (the cost model uses it as the prior score)."""
    M, N, K = shapes.get("M", 1), shapes["N"], shapes["K"]
    B, G = shapes.get("B", 1), shapes.get("G", 1)
    bm, bn, bk = config.get("BLOCK_M", min(16, M)), config["BLOCK_N"], config["BLOCK_K"]
    split, warps = config.get("SPLIT_K", 1), config.get("num_warps", 4)
    sms = device.sm_count
    tiles = math.ceil(M / bm) * math.ceil(N / bn) * split * B
    res = max(1, min(blocks, math.ceil(tiles / sms)))  # programs resident on a busy SM
    waves = math.ceil(tiles / (sms * res))
    rate = 1.0 if warps >= 4 and bm % 64 == 0 else 0.5
    t_mma = 2.0 * bm * bn * bk * G * res / (peak_tflops * 1e12 / sms * rate)
    t_load = (bm * isz + G * bn * wsz) * bk * res / (device.bandwidth_gbps * 1e9 * L2_OVER_DRAM / sms)
    t_wait = LOAD_LATENCY_S / max(1, config.get("num_stages", 2) - 1)
    t = waves * math.ceil(K / (bk * split)) * max(t_mma, t_load, t_wait)
    return math.log2(max(t, dram_bytes / (device.bandwidth_gbps * 1e9)) / floor_s)


def featurize(template: str, shapes: dict, dtype, config: dict, device: DeviceInfo) -> dict[str, float]:
    """The named features of one config (see the module docstring)."""
    f: dict[str, float] = {n: float("nan") for n in FEATURE_NAMES}
    for k in KNOBS:
        if k in config:
            f[f"knob_{k}"] = _log2(config[k])
    for k in FLAGS:
        if k in config:
            f[f"knob_{k}"] = float(bool(config[k]))
    info = template_info(template, shapes)
    for t in FAMILIES:
        f[f"family_{t}"] = 1.0 if info.family == t else 0.0
    isz = itemsize(dtype)
    f["itemsize"] = isz
    warps = config.get("num_warps", 4)
    threads = 32 * warps
    sms = device.sm_count
    peak = device.peak_tflops * (0.5 if isz >= 4 else 1.0)  # fp32 runs as tf32 at ~half rate
    bw = device.bandwidth_gbps

    if info.family == "gemm":
        M, N, K, B = shapes.get("M", 1), shapes["N"], shapes["K"], shapes.get("B", 1)
        G = shapes.get("G", 1)  # GEMMs sharing A in one kernel (2: dual GEMM)
        bm = config.get("BLOCK_M", min(16, M))  # a GEMV-shaped template has no M tile
        bn, bk, split = config["BLOCK_N"], config["BLOCK_K"], config.get("SPLIT_K", 1)
        wsz = info.weight_itemsize or isz
        f["weight_itemsize"] = wsz
        tm, tn = math.ceil(M / bm), math.ceil(N / bn)
        programs = tm * tn * split * B
        smem = gemm_smem_bytes({**config, "BLOCK_M": bm}, isz, wsz, gemms=G)
        regs = gemm_acc_regs_per_thread({**config, "BLOCK_M": bm}, G)
        flops = 2.0 * M * N * K * B * G
        min_bytes = (M * K * isz + G * K * N * wsz + M * N * isz) * B  # each operand read, the output written once
        bytes_ = min_bytes + M * N * isz * B * (split > 1) * 2 * split  # split-K: partial sums written and read
        f.update(log_M=_log2(M), log_N=_log2(N), log_K=_log2(K), log_B=_log2(B),
                 tile_ai=2.0 * bm * bn * bk / ((bm * bk * isz + bk * bn * wsz)),
                 global_ai_log=_log2(flops / bytes_), smem_kb=smem / 1024, smem_frac=smem / device.smem_per_block,
                 regs_per_thread=regs, pad_waste=(tm * bm * tn * bn) / (M * N),
                 k_iters_log=_log2(math.ceil(K / (bk * split))),
                 floor_compute_us_log=_log2(flops / (peak * 1e6)), floor_memory_us_log=_log2(bytes_ / (bw * 1e3)),
                 compute_bound=1.0 if flops / (peak * 1e6) > bytes_ / (bw * 1e3) else 0.0)
        blocks_by_smem = device.smem_per_block // max(1, smem) if smem else 32
        blocks_by_threads = device.max_threads_per_sm // threads
        blocks_by_regs = device.regs_per_sm // max(1, int(threads * (regs + 32)))
        blocks = max(0, min(blocks_by_smem, blocks_by_threads, blocks_by_regs, 32))
        if config.get("PERSISTENT"):  # one program per SM loops over the tiles: waves of tiles over the SMs
            blocks = min(blocks, 1)
        f["analytic_log"] = gemm_analytic_log(shapes, config, isz, wsz, blocks, device, peak,
                                              max(flops / (peak * 1e12), min_bytes / (bw * 1e9)), bytes_)
    elif info.family == "reduction":
        rows, cols = shapes["rows"], shapes["cols"]
        xb, rb = config["XBLOCK"], config["RBLOCK"]
        programs = math.ceil(rows / xb)
        bytes_ = rows * cols * isz + rows * isz
        f.update(log_rows=_log2(rows), log_cols=_log2(cols), single_pass=1.0 if rb >= cols else 0.0,
                 chunks_log=_log2(math.ceil(cols / rb)), elems_per_thread_log=_log2(xb * rb / threads),
                 pad_waste=(programs * xb * math.ceil(cols / rb) * rb) / (rows * cols),
                 regs_per_thread=xb * rb / threads, floor_memory_us_log=_log2(bytes_ / (bw * 1e3)),
                 compute_bound=0.0)
        blocks = max(1, min(device.max_threads_per_sm // threads, 32))
    else:  # pointwise and unknown templates: one flat block per program
        numel = shapes.get("numel", 1)
        xb = config.get("XBLOCK", 1024)
        programs = math.ceil(numel / xb)
        f.update(log_numel=_log2(numel), elems_per_thread_log=_log2(xb / threads),
                 pad_waste=programs * xb / numel, regs_per_thread=xb / threads,
                 floor_memory_us_log=_log2(2 * numel * isz / (bw * 1e3)), compute_bound=0.0)
        blocks = max(1, min(device.max_threads_per_sm // threads, 32))

    concurrent = max(1, blocks * sms)
    waves = programs / concurrent
    f.update(programs_log=_log2(programs), waves=waves,
             wave_eff=waves / math.ceil(waves) if waves > 0 else 0.0,
             tail_frac=(programs % concurrent) / concurrent, blocks_per_sm=blocks,
             occupancy=min(1.0, blocks * threads / device.max_threads_per_sm))
    f.update(dev_sm_count=sms, dev_l2_mb=device.l2_bytes / 2 ** 20, dev_bw_tbs=bw / 1000,
             dev_peak_tflops=device.peak_tflops, dev_cc=device.capability[0] * 10 + device.capability[1],
             dev_smem_kb=device.smem_per_block / 1024)
    return f


def feature_matrix(template: str, shapes: dict, dtype, configs: list[dict], device: DeviceInfo) -> np.ndarray:
    """Rows of FEATURE_NAMES-ordered features for many configs of one problem."""
    rows = []
    for c in configs:
        f = featurize(template, shapes, dtype, c, device)
        rows.append([f[n] for n in FEATURE_NAMES])
    return np.array(rows, dtype=np.float32).reshape(len(configs), len(FEATURE_NAMES))
