"""Every kernel of one compiled step in launch order, with its GPU µs (torch profiler), next to the compiled
program's own kernel list, so same-named kernels (every quantized GEMM is `wq_gemm_kernel`) can be told apart.
    python bench/step_kernels.py [--model llama_b1] [--quant int4] [--out step.json]   (GPU; --dry-run: CPU)
Prints per kernel of the program (static steps excluded: they run once) its mean µs over the profiled calls."""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama_b1")
    ap.add_argument("--quant", default="int4", help="int8, int4 or none (bf16)")
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", default="")
    ap.add_argument("--dry-run", action="store_true", help="tiny model on the CPU: the program's kernels only")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    import tilecraft
    from models import QUANT, build

    dev = "cpu" if args.dry_run else "cuda"
    model, ids, _ = build(args.model, args.dry_run, dev)
    model = model.to(torch.float32 if args.dry_run else torch.bfloat16)
    kw = {} if args.quant == "none" else {"quantize": QUANT[args.quant]}
    c = tilecraft.compile(model, **kw)
    with torch.no_grad():
        c(ids)
        c(ids)
        prog = c.report.graphs[0].program
        static = prog._static_steps or set()
        steps = [(s.kernel.fn_name, s.kernel.name) for i, s in enumerate(prog.steps)
                 if hasattr(s, "kernel") and not getattr(s, "failed", False) and i not in static]
        names = [n for _, n in steps]
        rows = []
        if not args.dry_run:
            from torch.profiler import ProfilerActivity, profile

            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.calls):
                    c(ids)
                torch.cuda.synchronize()
            evs = sorted((e for e in prof.events() if e.device_type.name == "CUDA" and e.device_time > 0),
                         key=lambda e: e.time_range.start)
            per = len(evs) // args.calls
            for j in range(per):
                us = sum(evs[j + k * per].device_time for k in range(args.calls)) / args.calls
                rows.append((evs[j].name[:60], round(us, 2)))
    print(f"{args.model} {args.quant}: {len(names)} generated kernels per call, {len(rows)} device ops profiled")
    out, at = [], 0
    for name, us in rows:  # the program's next kernel of that function name; else launched by a torch step
        j = next((j for j in range(at, len(steps)) if steps[j][0] == name), None)
        label, at = ("(torch step)", at) if j is None else (steps[j][1], j + 1)
        out.append({"device": name, "us": us, "kernel": label})
        print(f"{us:8.2f}  {name:40s} {label}")
    if args.dry_run:
        for n in names:
            print(f"       -  {n}")
    if rows:
        print(f"total {sum(u for _, u in rows):.1f} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"model": args.model, "quant": args.quant, "rows": out, "kernels": names}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
