"""The planted-bug suite on a device: for each planted fault, a campaign with the fault in place; reports the
time to the first failing model (time-to-find), the time to its reduced repro, and the repro's size.

    python bench/fuzz_planted.py --device cuda --out DIR      (GPU)
    python bench/fuzz_planted.py --dry-run --out DIR          (CPU interpreter, two faults, small budget)
Writes DIR/planted.json and prints a table. Exit status 1 when a fault was not found.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hunt(name: str, out: str, device: str, budget_s: float, seed: int) -> dict:
    from tilecraft.fuzz import planted
    from tilecraft.fuzz.campaign import CampaignConfig, run_campaign

    f = planted.FAULTS[name]
    t0 = time.perf_counter()
    with f.plant():
        s = run_campaign(CampaignConfig(seed=seed, out=os.path.join(out, name), backend=f.backend, time_s=budget_s,
                                        progress=False, reduce_checks=150, reduce_seconds=30, stop_after_reduced=1,
                                        device=device))
    wall = time.perf_counter() - t0
    cases = [json.loads(x) for x in open(os.path.join(out, name, "cases.jsonl"))]
    first, spent = None, 0.0
    for c in cases:
        spent += c["seconds"]
        if c["status"] not in ("ok", "skipped"):
            first = c
            break
    reduced = [x for x in s.failures if x.reduced_nodes is not None]
    return {"fault": name, "found": first is not None, "models_to_find": (cases.index(first) + 1) if first else None,
            "time_to_find_s": round(spent, 2) if first else None, "time_to_repro_s": round(wall, 2),
            "status": first["status"] if first else None, "seed": first["seed"] if first else None,
            "reduced_nodes": min((x.reduced_nodes for x in reduced), default=None),
            "from_nodes": first["nodes"] if first else None, "models": s.models}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="fuzz-planted")
    p.add_argument("--budget-s", type=float, default=90.0, help="per fault")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--faults", default=None, help="comma-separated (default: all)")
    p.add_argument("--dry-run", action="store_true", help="CPU interpreter, two faults, 60 s each")
    a = p.parse_args(argv)
    if a.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    from tilecraft.fuzz import planted

    device = "cpu" if a.dry_run else (a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = a.faults.split(",") if a.faults else (["wrong_sub", "dropped_epilogue"] if a.dry_run
                                                   else list(planted.FAULTS))
    budget = 60.0 if a.dry_run else a.budget_s
    os.makedirs(a.out, exist_ok=True)
    rows = [hunt(n, a.out, device, budget, a.seed) for n in names]
    with open(os.path.join(a.out, "planted.json"), "w") as f:
        json.dump({"device": device, "rows": rows}, f, indent=1)
    print(f"planted faults on {device} (budget {budget:.0f}s each)")
    print("| fault | found | models to find | time to find (s) | time to reduced repro (s) | repro ops (from) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['fault']} | {r['found']} | {r['models_to_find']} | {r['time_to_find_s']} | "
              f"{r['time_to_repro_s']} | {r['reduced_nodes']} ({r['from_nodes']}) |")
    return 0 if all(r["found"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
