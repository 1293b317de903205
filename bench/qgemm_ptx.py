"""What a quantized GEMM config runs on a Hopper GPU, found on the CPU: each candidate config of the wq_gemm
kernel is compiled for sm_90 by Triton's CUDA backend (no device needed) and its PTX, TTGIR and ptxas report
inspected. One line per config:

    wgmma   RS (the dequantized weight tile is the A operand, from registers) / SS (both from shared memory) /
            no (mma.sync or FMA); "async" when several wgmma groups stay in flight (wait_group N > 0 in the
            loop), "serial" when ptxas says it had to serialize them (warning C7515)
    loads   global loads by kind and width: cp.async 16B/8B/4B (pipelined into shared memory), TMA (tensor
            copies), ld.v4 ... (plain loads into registers, not pipelined)
    regs, spill bytes (ptxas -v), smem bytes (Triton's metadata), how many CTAs of it fit on one SM
    loop    SASS instructions per K chunk of the main loop, and the ratio of their issue time (warps x count / 4
            schedulers) to the chunk's tensor-core time (2048 bf16 FMA per cycle per SM): near or above 1 the
            dequantization, not the tensor cores, sets the pace

    python bench/qgemm_ptx.py                                   # the large-M candidates, int8 and int4 g128
    python bench/qgemm_ptx.py --schemes int4 --group 64 --shape 2048x2048x5632
    python bench/qgemm_ptx.py --config '{"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "num_warps": 8,
                                         "num_stages": 3, "TRANS": true}' --dump /tmp/q   # also write PTX/TTGIR
Exits 1 when a config does not compile.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # compile for the GPU, never interpret (set before tilecraft is imported)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from tilecraft.codegen.kernel import LAUNCH_KEYS, load_source  # noqa: E402

PTR_TYPES = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.int8: "*i8",
             torch.uint8: "*u8", torch.int32: "*i32"}
EXTRA_PTRS = {"ws_ptr": "*fp32", "cnt_ptr": "*i32"}  # the GEMM's split-K workspace (not among kernel.args)
SCHEMES = {"int8": "int8_weight_only", "int4": "int4_weight_only"}


def compile_sm90(kernel, config: dict, arch: int = 90):
    """Triton's CompiledKernel of `kernel` (a QuantKernel) under `config` for CUDA sm_`arch`, as a launch would
    specialize it: pointers 16-byte aligned, integer arguments divisible by 16 marked so when they are."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel.check_config(config)
    fn = load_source(kernel.source, kernel.fn_name)
    consts = {**kernel.extra, **{k: v for k, v in config.items() if k not in LAUNCH_KEYS and k != "BACKEND"}}
    ints = {"M": kernel.shapes["M"], "N": kernel.shapes["N"], "K": kernel.shapes["K"],
            "stride_xm": kernel.extra.get("stride_xm", kernel.shapes["K"]), "stride_om": kernel.shapes["N"]}
    ptrs = iter(PTR_TYPES[a.dtype] for a in kernel.args)
    sig, attrs, constexprs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name.endswith("_ptr"):
            sig[name] = EXTRA_PTRS.get(name) or next(ptrs)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in ints:
            sig[name] = "i32"
            if ints[name] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "constexpr"
            constexprs[name] = consts[name]
    opts = {k: config[k] for k in LAUNCH_KEYS if k in config}
    return triton.compile(ASTSource(fn, sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", arch, 32),
                          options=opts)


def ptxas_info(ptx: str, arch: int = 90) -> dict:
    """Registers, spill bytes and warnings from `ptxas -v` (Triton's bundled ptxas) on the PTX, and the SASS
    of the main loop (sass_loop)."""
    import triton.knobs

    with tempfile.TemporaryDirectory() as d:
        src, cubin = Path(d) / "k.ptx", Path(d) / "k.cubin"
        src.write_text(ptx)
        proc = subprocess.run([triton.knobs.nvidia.ptxas.path, f"-arch=sm_{arch}a", "-v", str(src), "-o",
                               str(cubin)], capture_output=True, text=True, timeout=300)
        sass = subprocess.run([triton.knobs.nvidia.cuobjdump.path, "-sass", str(cubin)], capture_output=True,
                              text=True, timeout=300).stdout if proc.returncode == 0 else ""
    log = proc.stdout + proc.stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = [int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    return {"regs": int(regs.group(1)) if regs else None, "spill_bytes": max(spills, default=0),
            "warnings": sorted(set(re.findall(r"\((C\d+)\)", log))), "ptxas_ok": proc.returncode == 0,
            "sass_loop": sass_loop(sass)}


def sass_loop(sass: str) -> dict:
    """The innermost loop with tensor-core instructions (HGMMA: wgmma; HMMA: mma.sync) in the SASS: its
    instruction count per iteration and opcode histogram. Each warp issues these once per K chunk, so
    warps x count / 4 schedulers is the chunk's issue time in cycles, to compare with its tensor-core time."""
    ins = [(int(a, 16), op) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][\w.]*)", sass)]
    best = None
    for addr, op in ins:
        if op.startswith("BRA"):
            m = re.search(rf"/\*{addr:04x}\*/[^\n]*BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", sass)
            target = int(m.group(1), 16) if m else addr
            body = [o for a, o in ins if target <= a <= addr]
            if target < addr and any(o.startswith(("HGMMA", "HMMA")) for o in body) and (
                    best is None or len(body) < len(best)):
                best = body
    if best is None:
        return {}
    return {"instrs": len(best), "ops": dict(Counter(o.split(".")[0] for o in best).most_common())}


def inspect_ptx(ptx: str) -> dict:
    """Which MMA instructions and which global load kinds the PTX uses."""
    ins = Counter()
    for line in ptx.splitlines():
        line = re.sub(r"^@!?%p\d+\s+", "", line.strip())
        if line and line[0].isalpha():
            ins[line.split()[0].rstrip(";")] += 1
    wgmma = [i for i in ins if i.startswith("wgmma.mma_async")]
    # RS: the A operand is a register list ({%r..}); SS: a shared memory descriptor (%rd..)
    rs = re.search(r"wgmma\.mma_async\S*\s+\{[^}]*\},\s*\{", ptx) is not None
    waits = [int(w) for w in re.findall(r"wgmma\.wait_group\.sync\.aligned\s+(\d+)", ptx)]
    loads = Counter()
    for line in ptx.splitlines():
        line = line.strip()
        m = re.search(r"cp\.async\.c[ag]\.shared\.global\S*\s.*?,\s*(0x[0-9a-f]+|\d+)", line)
        if m:
            loads[f"cp.async {int(m.group(1), 0)}B"] += 1
        elif "cp.async.bulk.tensor" in line:
            loads["TMA"] += 1
        else:
            m = re.search(r"\bld\.global(?:\.\w+)*?(?:\.(v\d))?\.(b|u|s|f)(\d+)", line)
            if m:
                width = int(m.group(3)) // 8 * int((m.group(1) or "v1")[1:])
                loads[f"ld {width}B"] += 1
    return {"wgmma": ("RS" if rs else "SS") if wgmma else "no",
            "wgmma_shapes": sorted({w.split(".")[-4] for w in wgmma}),
            "async": any(w > 0 for w in waits), "mma_sync": sum(v for i, v in ins.items() if i.startswith("mma.sync")),
            "loads": dict(sorted(loads.items())),
            "ld_shared": dict(sorted((i, v) for i, v in ins.items() if i.startswith("ld.shared")))}


def inspect_config(kernel, config: dict, arch: int = 90, dump: str | None = None) -> dict:
    """One row: the config's wgmma use, load kinds, registers, spills and shared memory on sm_`arch`."""
    row = {"scheme": kernel.scheme, "config": config}
    try:
        ck = compile_sm90(kernel, config, arch)
    except Exception as e:  # noqa: BLE001 - reported per config
        row["error"] = f"{type(e).__name__}: {e}"[:400]
        return row
    ptx = ck.asm["ptx"]
    row.update(inspect_ptx(ptx), smem=ck.metadata.shared, **ptxas_info(ptx, arch))
    row["serial"] = "C7515" in row["warnings"]  # ptxas serialized the wgmma pipeline
    row["ctas_per_sm"] = ctas_per_sm(row["regs"], row["smem"], config["num_warps"])
    if dump:
        stem = Path(dump) / f"{kernel.scheme.split('_')[0]}_{short(config).replace(' ', '_')}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        stem.with_suffix(".ptx").write_text(ptx)
        stem.with_suffix(".ttgir").write_text(ck.asm["ttgir"])
    return row


def ctas_per_sm(regs: int | None, smem: int, warps: int) -> int:
    """How many CTAs fit on one Hopper SM at once: 64K registers (allocated per warp in units of 256), 228 KB of
    shared memory (1 KB reserved per CTA), 64 warps."""
    if not regs:
        return 0
    per_warp = -(-regs * 32 // 256) * 256
    return min(65536 // (per_warp * warps), 233472 // (smem + 1024), 64 // warps)


def short(c: dict) -> str:
    tile = "x".join(str(c[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K") if k in c)
    flags = [f for f, k in (("T", "TRANS"), ("SW", "SCALE_W"), ("P", "PERSISTENT")) if c.get(k)]
    flags += [f"sk{c['SPLIT_K']}"] if c.get("SPLIT_K", 1) > 1 else []
    return " ".join([tile] + flags + [f"w{c.get('num_warps')}s{c.get('num_stages')}"])


def describe(row: dict) -> str:
    name = row["scheme"].split("_")[0]
    if "error" in row:
        return f"{name:5} {short(row['config']):28} ERROR {row['error']}"
    mma = row["wgmma"] + ("" if row["wgmma"] == "no" else " async" if row["async"] else " sync")
    mma += " SERIALIZED(C7515)" if row["serial"] else ""
    if row["wgmma"] == "no" and row["mma_sync"]:
        mma += f" (mma.sync x{row['mma_sync']})"
    loads = ", ".join(f"{k} x{v}" for k, v in row["loads"].items())
    c, loop = row["config"], row.get("sass_loop") or {}
    # per K chunk: issue cycles (warps x loop instructions / 4 schedulers) over tensor-core cycles (an H100/H200
    # SM does 2048 bf16 FMA per cycle): above ~0.7 the dequantization, not the tensor cores, sets the pace
    issue = c["num_warps"] * loop["instrs"] / 4 if loop else None
    tensor = c["BLOCK_M"] * c["BLOCK_N"] * c["BLOCK_K"] / 2048
    return (f"{name:5} {short(c):28} wgmma {mma:10} {'/'.join(row['wgmma_shapes']):10} "
            f"regs {row['regs']} spill {row['spill_bytes']}B smem {row['smem']}B ({row['ctas_per_sm']} CTA/SM) | "
            f"loads {loads} | "
            f"ld.shared {sum(row['ld_shared'].values())} | loop {loop.get('instrs', '-')} SASS "
            f"(issue/tensor {issue / tensor if issue else float('nan'):.2f})")


def main(argv=None) -> int:
    from tilecraft.quant.kernels import large_m_configs, make_kernel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schemes", default="int8,int4")
    ap.add_argument("--group", type=int, default=128, help="int4 group size")
    ap.add_argument("--shape", default="2048x5632x2048", help="MxNxK (N, K: the weight's out and in features)")
    ap.add_argument("--config", action="append", default=[], help="a JSON config (repeatable); default: the "
                    "large-M candidates of tilecraft.quant.kernels.large_m_configs")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--dump", help="write each config's PTX and TTGIR into this folder")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args(argv)
    M, N, K = (int(v) for v in a.shape.split("x"))
    rows = []
    for s in a.schemes.split(","):
        scheme = SCHEMES[s]
        group = a.group if s == "int4" else 0
        kernel = make_kernel(scheme, M, N, K, torch.bfloat16, group, False, "wq_gemm")
        configs = [json.loads(c) for c in a.config] or large_m_configs(scheme, M, N, K, group)
        for cfg in configs:
            cfg = {"SPLIT_K": 1, **{k: v for k, v in cfg.items() if k != "SCALE_W" or s == "int4"}}
            row = inspect_config(kernel, cfg, a.arch, a.dump)
            rows.append(row)
            print(describe(row), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
