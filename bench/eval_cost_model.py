"""Score the cost model and the search strategies on recorded GEMM sweeps, leave-one-shape-out (CPU only).

    python bench/eval_cost_model.py bench/results/h200/gemm_sweep.json [more sweep files] [--save-default]

For each shape (a group of records: kernel, shapes, dtype, device) the XGBoost model is trained on the other
shapes' records and judged on this one's configs that the space's rules keep:
  pairwise   share of config pairs it orders like the measured times
  top1       time of its top pick / the best time (its pick failing counts as failed, the next pick is used)
  top5       best time among its top 5 / the best time
Then random, guided (evolutionary + cost model, cold) and guided+transfer (trained on the other shapes first,
default config not measured first) are replayed on the recorded table (`ReplayMeasurer`): measurements to get
within 5% of the table's best, mean over --seeds. A "rules" column shows the best config the space's pruning rules
remove (recorded by bench/gemm_sweep.py with its `rule`) relative to the best kept one (< 0.95: a rule removes a
fast config). --save-default retrains the model on every record and saves it where the tuner loads its default
(tilecraft/tuner/data/cost_model.json, or --save PATH). Writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIN_CONFIGS = 8  # a shape with fewer successful configs cannot be judged


@dataclass
class RecordedKernel:
    """The kernel protocol's identity part for a recorded problem (replay needs no launch)."""

    template: str
    shapes: dict
    dtype: str
    key: str
    default: dict
    name: str = ""
    info: dict = field(default_factory=dict)

    def default_config(self) -> dict:
        return dict(self.default)


def load_sweeps(paths: list[str]) -> tuple[list, dict]:
    """All records of the files, and each record's rule verdict (None: the space keeps it) by id."""
    from tilecraft.tuner.cost_model import load_records

    records, rules = [], {}
    for p in paths:
        raw = json.loads(Path(p).read_text())
        items = raw.get("records", []) if isinstance(raw, dict) else raw
        recs = load_records(p)
        for i, r in enumerate(recs):
            rules[id(r)] = items[i].get("rule") if i < len(items) and isinstance(items[i], dict) else None
        records += recs
    return records, rules


def model_metrics(model, recs) -> dict:
    """pairwise / top1 / top5 of a trained model on one group's records (ok and failed)."""
    from tilecraft.tuner.cost_model import pairwise_accuracy, score_records

    scores = score_records(model, recs)
    order = sorted(range(len(recs)), key=lambda i: -scores[i])
    ok_times = [r.time_ms for r in recs if r.status == "ok"]
    best = min(ok_times)
    first_ok = next(i for i in order if recs[i].status == "ok")
    top5 = [recs[i].time_ms for i in order[:5] if recs[i].status == "ok"]
    return {"pairwise": pairwise_accuracy(recs, scores), "top1": recs[first_ok].time_ms / best,
            "top1_failed": recs[order[0]].status != "ok", "top5": (min(top5) / best) if top5 else math.inf}


def replay(kernel, recs, prior, seeds: int, device) -> dict:
    """Measurements to within 5% of the best for random / guided / guided+transfer on the recorded table."""
    from tilecraft.tuner.cost_model import XGBoostCostModel
    from tilecraft.tuner.measure import Measurement, ReplayMeasurer
    from tilecraft.tuner.search import search
    from tilecraft.tuner.spaces import ConfigSpace, config_key, subset_space

    table = {config_key(r.config): Measurement(dict(r.config), r.status, r.time_ms) for r in recs}
    configs = [r.config for r in recs]
    knobs = {k: sorted({c[k] for c in configs}, key=lambda v: (str(type(v)), v)) for k in configs[0]}
    space = subset_space(ConfigSpace(kernel.template, knobs), configs)
    target = min(r.time_ms for r in recs if r.status == "ok") * 1.05
    out = {}
    for name, strat, pri, skip in (("random", "random", None, False), ("guided", "guided", None, False),
                                   ("transfer", "guided", prior, True)):
        ns = []
        for seed in range(seeds):
            r = search(kernel, space, ReplayMeasurer(table), strat, budget=len(table), seed=seed, device_info=device,
                       target_ms=target, prior_records=pri, model=XGBoostCostModel(num_rounds=60), batch_size=4,
                       measure_default=not skip)
            ns.append(r.measurements_to_reach(target) or len(table))
        out[name] = statistics.mean(ns)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", help="sweep JSON files (bench/gemm_sweep.py, bench/tune_gemm.py)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--no-search", action="store_true", help="model metrics only (search replay is the slow part)")
    p.add_argument("--save-default", action="store_true", help="retrain on all records and save the default model")
    p.add_argument("--save", default=None, help="where --save-default writes (default: the tuner's default path)")
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)

    from tilecraft.tuner.cost_model import XGBoostCostModel, default_model_path

    records, rules = load_sweeps(args.sweeps)
    groups = defaultdict(list)
    for r in records:
        groups[r.group()].append(r)
    judged = {g: rs for g, rs in groups.items() if sum(r.status == "ok" for r in rs) >= MIN_CONFIGS}
    print(f"{len(records)} records, {len(groups)} problems, {len(judged)} with >= {MIN_CONFIGS} successful configs",
          flush=True)
    rows = []
    for g, rs in judged.items():
        kept = [r for r in rs if rules.get(id(r)) is None]
        removed = [r for r in rs if rules.get(id(r)) is not None and r.status == "ok"]
        kept_ok = [r for r in kept if r.status == "ok"]
        if len(kept_ok) < MIN_CONFIGS:
            continue
        train = [r for g2, rs2 in groups.items() if g2 != g for r in rs2 if rules.get(id(r)) is None]
        model = XGBoostCostModel().fit(train)
        best_kept = min(r.time_ms for r in kept_ok)
        r0 = kept[0]
        row = {"shape": "x".join(str(r0.shapes[k]) for k in ("M", "N", "K") if k in r0.shapes), "dtype": r0.dtype,
               "configs": len(kept), "failed": len(kept) - len(kept_ok), "best_ms": best_kept,
               "removed_best_over_kept_best": (min(r.time_ms for r in removed) / best_kept) if removed else None,
               **model_metrics(model, kept)}
        if not args.no_search:
            kernel = RecordedKernel(r0.template, r0.shapes, r0.dtype, r0.kernel_key, rs[0].config)
            table = kept + ([rs[0]] if rules.get(id(rs[0])) is not None else [])  # the default (swept first)
            row.update(replay(kernel, table, train, args.seeds, r0.device_info()))
        rows.append(row)
        print(f"{row['shape']:<16} pairwise {row['pairwise']:.3f} top1 {row['top1']:.2f}"
              f"{' (pick failed)' if row['top1_failed'] else ''} top5 {row['top5']:.2f}"
              + ("" if args.no_search else
                 f" | to 5%: random {row['random']:.1f} guided {row['guided']:.1f} transfer {row['transfer']:.1f}"),
              flush=True)
    summary = {}
    if rows:
        def gmean(xs):
            return math.exp(statistics.mean(math.log(x) for x in xs))

        summary = {"shapes": len(rows), "pairwise": statistics.mean(r["pairwise"] for r in rows),
                   "top1_geomean": gmean([r["top1"] for r in rows]), "top1_max": max(r["top1"] for r in rows),
                   "top5_geomean": gmean([r["top5"] for r in rows]),
                   "rules_removed_within_5pct": sum(1 for r in rows if (r["removed_best_over_kept_best"] or 9) < 0.95)}
        if not args.no_search:
            summary.update({k: statistics.mean(r[k] for r in rows) for k in ("random", "guided", "transfer")})
        print(f"\n{'shape':<16} {'configs':>7} {'pairwise':>8} {'top1':>6} {'top5':>6} {'rules':>6}"
              + ("" if args.no_search else f" {'random':>7} {'guided':>7} {'transfer':>8}"))
        for r in rows:
            rem = r["removed_best_over_kept_best"]
            print(f"{r['shape']:<16} {r['configs']:>7} {r['pairwise']:>8.3f} {r['top1']:>6.2f} {r['top5']:>6.2f} "
                  f"{(f'{rem:.2f}' if rem else '-'):>6}"
                  + ("" if args.no_search else f" {r['random']:>7.1f} {r['guided']:>7.1f} {r['transfer']:>8.1f}"))
        print(f"{'mean':<16} {'':>7} {summary['pairwise']:>8.3f} {summary['top1_geomean']:>6.2f} "
              f"{summary['top5_geomean']:>6.2f} {'':>6}"
              + ("" if args.no_search else
                 f" {summary['random']:>7.1f} {summary['guided']:>7.1f} {summary['transfer']:>8.1f}"))
        print(f"(top1/top5: geometric means; worst top1 {summary['top1_max']:.2f}; "
              f"{summary['rules_removed_within_5pct']} shapes where a pruning rule removes a config > 5% faster "
              f"than the best kept one)")
    saved = None
    if args.save_default:
        kept_all = [r for r in records if rules.get(id(r)) is None]
        model = XGBoostCostModel().fit(kept_all)
        saved = str(Path(args.save) if args.save else default_model_path())
        Path(saved).parent.mkdir(parents=True, exist_ok=True)
        model.save(saved)
        print(f"default cost model retrained on {model.n_train} records; saved to {saved}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"sweeps": args.sweeps, "rows": rows, "summary": summary,
                                              "saved_model": saved}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
