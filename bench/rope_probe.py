"""What RoPE in the q/k/v GEMM's epilogue costs (passes/quantize.py fuse_rope_qlinear), by variant, on LLaMA-492M's
int4 b1x16 step: per-kernel GPU µs (torch profiler) of the q/k/v GEMMs and of the RoPE kernels, and the step's
total. Variants (one process, compiled in turn):
    off       TILECRAFT_ROPE_GEMM=0: the GEMM without RoPE, a RoPE kernel after it
    on        the default: RoPE in the epilogue
    map       the epilogue's rotation left out (the ROPE tile mapping alone; wrong results, timing only)
    late      the cos/sin loads only where the epilogue uses them (not at the EARLY LOADS mark)
    python bench/rope_probe.py [--variants off,on,map,late] [--out rope_probe.json]     (GPU)
    python bench/rope_probe.py --dry-run    (CPU interpreter, tiny model: each variant's kernels, no timing)"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def profile_step(c, ids, calls=10):
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        for _ in range(3):
            c(ids)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                c(ids)
            torch.cuda.synchronize()
    evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA" and e.device_time > 0),
                 key=lambda e: e.time_range.start)
    per = len(evs) // calls
    return [(evs[j].name, sum(evs[j + k * per].device_time for k in range(calls)) / calls) for j in range(per)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="off,on,map,late")
    ap.add_argument("--out", default="")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    import tilecraft
    from tilecraft.codegen import qmatmul
    from models import QUANT, build

    if args.dry_run:  # (models.py's tiny LLaMA has head dim 8; the GEMM's 16-wide tiles need heads of 16)
        import transformers

        from models import TINY

        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            **dict(TINY, hidden_size=64, intermediate_size=64, num_key_value_heads=2), use_cache=False)).eval()
        ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(1))
    else:
        model, ids, _ = build("llama_b1", False, "cuda")
        model = model.to(torch.bfloat16)
    real_epilogue, real_early = qmatmul.rope_epilogue, qmatmul.early_loads

    def late_loads(lines, params):  # the RoPE lines stay in the body, where the epilogue uses them
        early, body = real_early(lines, params)
        return [x for x in early if "rp_" not in x], [x for x in lines if x in body or "rp_" in x]

    results = []
    for v in args.variants.split(","):
        os.environ["TILECRAFT_ROPE_GEMM"] = "0" if v == "off" else "1"
        qmatmul.rope_epilogue = (lambda *a: None) if v == "map" else real_epilogue
        qmatmul.early_loads = late_loads if v == "late" else real_early
        torch._dynamo.reset()
        c = tilecraft.compile(model, quantize=QUANT["int4"])
        if args.dry_run:  # the program's kernels only
            with torch.no_grad():
                c(ids)
            kernels = c.report.graphs[0].program.kernels
            r = {"variant": v, "kernels": len(kernels),
                 "rope_gemms": sum(bool(getattr(k, "extra", {}).get("ROPE")) for k in kernels)}
            results.append(r)
            print(json.dumps(r), flush=True)
            continue
        rows = profile_step(c, ids)
        # the q/k/v GEMMs: the wq_gemm launch before each attention (RoPE kernels between them when off)
        qkv, rope, prev = [], [], []
        for name, us in rows:
            if name.startswith("small_attention"):
                for pn, pu in reversed(prev):
                    if pn.startswith("wq_gemm"):
                        qkv.append(pu)
                        break
                    rope.append(pu)
                prev = []
            else:
                prev.append((name, us))
        r = {"variant": v, "total_us": round(sum(u for _, u in rows), 1), "launches": len(rows),
             "qkv_us": round(sum(qkv) / max(1, len(qkv)), 2), "rope_us": round(sum(rope) / max(1, len(qkv)), 2)}
        results.append(r)
        print(json.dumps(r), flush=True)
    os.environ.pop("TILECRAFT_ROPE_GEMM", None)
    if not args.dry_run:
        print(f"{'variant':8s} {'step us':>8s} {'launches':>8s} {'qkv us':>7s} {'rope us':>7s}")
    for r in results:
        if args.dry_run:
            print(f"{r['variant']:8s} {r['kernels']:3d} kernels, {r['rope_gemms']} with RoPE in the GEMM")
        else:
            print(f"{r['variant']:8s} {r['total_us']:8.1f} {r['launches']:8d} {r['qkv_us']:7.2f} {r['rope_us']:7.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
