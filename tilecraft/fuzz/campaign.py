"""Fuzzing campaigns: generate, check, dedup, reduce, record; resumable from their output directory.

State lives in DIR: `cases.jsonl` gets one JSON line per model as soon as it is checked (nothing is lost on a
crash; a rerun with the same DIR continues after the last recorded case), `failures/<id>/` holds each unique
failure's program, reduced program and ready-to-use pytest file, and `summary.json` the latest summary.
Model seeds are derived from the campaign seed, so any case replays from its seed alone.

Each checked model is one of four outcomes (oracle.OUTCOMES): matched (in generated kernels), mismatched,
crashed, fell back. Every outcome but "matched" is a failure: deduplicated, reduced and reported alike.
With `jobs` > 1, worker processes (spawned: CUDA-safe) check models; the parent records them in index order
of completion and reduces failures itself (it regenerates a failing model from its seed).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from .case import run_seed
from .generator import generate
from .oracle import CLASSES, OUTCOMES
from .reduce import Reducer, repro_test

SEED_STRIDE = 1_000_000
FUSION_RULES = ("pointwise-chain", "reduction-prologue", "reduction-epilogue", "multi-reduction", "matmul-epilogue",
                "matmul-dual")
GROUP_KINDS = ("pointwise", "reduction", "matmul", "torch")
TEMPLATES = ("pointwise", "reduction", "matmul")


def model_seed(campaign_seed: int, index: int) -> int:
    """The seed of the index-th model of a campaign (what `--replay` takes)."""
    return campaign_seed * SEED_STRIDE + index


@dataclass
class CampaignConfig:
    seed: int = 0
    backend: str = "tilecraft"
    out: str = "fuzz-out"
    time_s: float = 600.0
    max_models: int | None = None
    reduce: bool = True
    reduce_checks: int = 200
    reduce_seconds: float = 60.0
    max_reductions_per_key: int = 4
    progress: bool = True
    stop_after_reduced: int | None = None  # stop once this many unique failures have a reduced repro
    device: str = "cpu"  # where inputs are built and kernels run
    dtypes: tuple | None = None  # float dtypes models are drawn from (None: float32, float16, bfloat16 mixed)
    jobs: int = 1  # worker processes checking models


@dataclass
class Failure:
    """One unique failure (by signature), its first model seed and its reduced repro."""

    id: str
    signature: str
    key: str
    seed: int
    message: str
    nodes: int
    reduced_nodes: int | None = None
    repro: str | None = None  # path of the pytest file
    count: int = 1


@dataclass
class Summary:
    models: int = 0
    checked: int = 0
    skipped: int = 0
    seconds: float = 0.0
    per_class: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # matched / mismatched / crashed / fell_back
    per_dtype: Counter = field(default_factory=Counter)  # "float16 matched", ...
    failures: list[Failure] = field(default_factory=list)
    rules: Counter = field(default_factory=Counter)
    wall_seconds: float = 0.0  # this run (not resumed ones): wall time and models
    run_models: int = 0
    ops: Counter = field(default_factory=Counter)

    @property
    def models_per_minute(self) -> float:
        return 60.0 * self.models / self.seconds if self.seconds > 0 else 0.0

    def fusion_coverage(self) -> dict[str, int]:
        """Counts of every fusion rule, group kind and kernel template (zeros included: never fired)."""
        keys = [f"rule:{r}" for r in FUSION_RULES] + [f"group:{k}" for k in GROUP_KINDS] + \
            [f"kernel:{t}" for t in TEMPLATES]
        return {k: self.rules.get(k, 0) for k in keys}

    def fallbacks(self) -> Counter:
        """Groups / kernels that fell back to torch, by cause."""
        return Counter({k[len("fallback "):]: v for k, v in self.rules.items() if k.startswith("fallback ")})

    @property
    def found_problems(self) -> int:
        """Checked models whose outcome is not "matched" (what `tilecraft fuzz` gates its exit code on)."""
        return sum(v for k, v in self.outcomes.items() if k != "matched")

    def to_json(self) -> dict:
        return {"models": self.models, "checked": self.checked, "skipped": self.skipped,
                "seconds": round(self.seconds, 2), "models_per_minute": round(self.models_per_minute, 1),
                "outcomes": {k: self.outcomes.get(k, 0) for k in ("matched", "mismatched", "crashed", "fell_back")},
                "per_dtype": dict(self.per_dtype), "per_class": dict(self.per_class), "unique_failures": [asdict(f) for f in self.failures],
                "fusion_coverage": self.fusion_coverage(),
                "fallbacks": dict(self.fallbacks().most_common()),
                "rule_coverage": dict(self.rules.most_common()), "op_coverage": dict(self.ops.most_common())}

    def text(self) -> str:
        lines = [f"models tried: {self.models} ({self.checked} checked, {self.skipped} skipped: no finite inputs "
                 f"found) in {self.seconds:.0f}s of checking = {self.models_per_minute:.0f} models/minute per job"
                 + (f"; this run {60 * self.run_models / self.wall_seconds:.0f} models/minute wall"
                    if self.wall_seconds and self.run_models else "")]
        o = self.outcomes
        lines.append(f"outcomes: matched in generated kernels {o['matched']}, mismatched {o['mismatched']}, "
                     f"crashed {o['crashed']}, fell back to torch {o['fell_back']}")
        by_dt = sorted({k.split()[0] for k in self.per_dtype})
        lines.append("by dtype: " + "; ".join(f"{d}: " + ", ".join(
            f"{k.split()[1]} {v}" for k, v in sorted(self.per_dtype.items()) if k.split()[0] == d) for d in by_dt))
        lines.append("failures by class: " + (", ".join(f"{c} {self.per_class[c]}" for c in CLASSES
                                                         if self.per_class[c]) or "none"))
        lines.append(f"unique failures (by signature): {len(self.failures)}")
        for f in self.failures:
            red = f" -> reduced to {f.reduced_nodes} ops: {f.repro}" if f.repro else ""
            lines.append(f"  [{f.id}] {f.key} x{f.count} seed {f.seed} ({f.nodes} ops){red}")
            lines.append(f"      {f.message.splitlines()[0][:150] if f.message else ''}")
        fusion = self.fusion_coverage()
        lines.append("fusion coverage: " + ", ".join(f"{k} {v}" for k, v in fusion.items()))
        fb = self.fallbacks()
        lines.append(f"fallback warnings (per group or kernel): {sum(fb.values())} in {len(fb)} causes"
                     + (", top:" if fb else ""))
        for k, v in fb.most_common(8):
            lines.append(f"  {v:6d}  {k[:150]}")
        other = {k: v for k, v in self.rules.items() if not k.startswith("fallback ")}
        lines.append(f"rule coverage ({len(other)} rules seen):")
        for k, v in sorted(other.items(), key=lambda kv: (-kv[1], kv[0]))[:40]:
            lines.append(f"  {v:6d}  {k}")
        lines.append(f"ops generated ({len(self.ops)}): " + ", ".join(f"{k} {v}" for k, v in self.ops.most_common()))
        return "\n".join(lines)


class Campaign:
    """A resumable campaign writing into `config.out`."""

    def __init__(self, config: CampaignConfig):
        self.cfg = config
        os.makedirs(os.path.join(config.out, "failures"), exist_ok=True)
        self.cases_path = os.path.join(config.out, "cases.jsonl")
        self.summary = Summary()
        self.done: set[int] = set()
        self.started = 0
        self.deadline = float("inf")
        self.by_sig: dict[str, Failure] = {}
        self.reductions: Counter = Counter()
        self._load()

    # -- state
    def _load(self) -> None:
        failures_path = os.path.join(self.cfg.out, "failures.json")
        if os.path.exists(failures_path):
            with open(failures_path) as f:
                for d in json.load(f):
                    fl = Failure(**d)
                    self.by_sig[fl.signature] = fl
                    self.reductions[fl.key] += 1
        if not os.path.exists(self.cases_path):
            return
        with open(self.cases_path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a torn last line from a crash
                    continue
                self._count(rec)
                self.done.add(rec["i"])
                self.summary.seconds += rec.get("seconds", 0.0)

    def _count(self, rec: dict) -> None:
        s = self.summary
        s.models += 1
        if rec["status"] == "skipped":
            s.skipped += 1
        else:
            s.checked += 1
            outcome = OUTCOMES.get(rec["status"], "crashed")
            s.outcomes[outcome] += 1
            s.per_dtype[f"{rec.get('dtype', '?')} {outcome}"] += 1
            if rec["status"] != "ok":
                s.per_class[rec["status"]] += 1
        s.rules.update(rec.get("rules", {}))
        s.ops.update(rec.get("ops", {}))

    def _append(self, rec: dict) -> None:
        with open(self.cases_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _save_failures(self) -> None:
        path = os.path.join(self.cfg.out, "failures.json")
        with open(path + ".tmp", "w") as f:
            json.dump([asdict(x) for x in self.by_sig.values()], f, indent=1)
        os.replace(path + ".tmp", path)

    # -- one model
    def record_failure(self, rec: dict) -> None:
        """Dedup a failing model by signature; reduce new-looking failures (a bounded number per failure key,
        before the campaign's deadline). Only a reduction re-checks the model (regenerated from its seed)."""
        key, ops, seed = rec["key"], set(rec["ops"]), rec["seed"]
        for f in self.by_sig.values():  # a known failure whose reduced op set this model contains: same bug
            if f.key == key and set(f.signature.rsplit("|", 1)[1].split("+")) <= ops:
                rec["failure"] = self._count_known(f)
                return
        signature = f"{key}|{'+'.join(sorted(ops))}"
        model = generate(seed, dtypes=self.cfg.dtypes)
        source, reduced_nodes, repro_path = model.source(), None, None
        if self.cfg.reduce and self.reductions[key] < self.cfg.max_reductions_per_key and \
                time.perf_counter() < self.deadline:  # past the campaign's time: record, do not reduce
            _, res = run_seed(seed, self.cfg.backend, self.cfg.device, self.cfg.dtypes)
            if res.verdict is not None and res.verdict.key == key:  # (a flaky failure is recorded unreduced)
                self.reductions[key] += 1
                red = Reducer(self.cfg.backend, self.cfg.reduce_checks, self.cfg.reduce_seconds, seed,
                              self.cfg.device).reduce(res)
                signature = red.reduced.verdict.signature
                if signature not in self.by_sig:
                    fid = _failure_id(signature)
                    self._write(fid, "reduced_model.py", red.reduced.source)
                    repro_path = self._write(fid, f"test_fuzz_{fid}.py", repro_test(
                        red, self.cfg.backend, name=f"fuzz_{fid}", device=self.cfg.device))
                    reduced_nodes = len(red.reduced.graph.nodes)
        if signature in self.by_sig:
            rec["failure"] = self._count_known(self.by_sig[signature])
            return
        fid = _failure_id(signature)
        self._write(fid, "model.py", source)
        self.by_sig[signature] = Failure(fid, signature, key, seed, rec.get("message", ""), rec["nodes"],
                                         reduced_nodes, repro_path)
        self._save_failures()
        rec["failure"] = fid

    def _write(self, fid: str, name: str, text: str) -> str:
        """Write failures/<fid>/<name>; returns its path."""
        d = os.path.join(self.cfg.out, "failures", fid)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        return os.path.join(d, name)

    def _count_known(self, f: Failure) -> str:
        f.count += 1
        self._save_failures()
        return f.id

    # -- the loop
    def _pending(self):
        """Model indices not recorded yet, in order (a resumed parallel campaign may have gaps)."""
        i = 0
        while True:
            if i not in self.done:
                yield i
            i += 1

    def run(self) -> Summary:
        cfg = self.cfg
        log = logging.getLogger("tilecraft")
        level = log.level
        log.setLevel(logging.ERROR)  # per-node fallback lines would flood the bar (restored at the end)
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.max_models, unit="model", dynamic_ncols=True)
        t_start = time.perf_counter()
        self.deadline = t_start + cfg.time_s
        pending = self._pending()

        def more() -> bool:
            if cfg.stop_after_reduced is not None and sum(
                    f.repro is not None for f in self.by_sig.values()) >= cfg.stop_after_reduced:
                return False
            return time.perf_counter() - t_start < cfg.time_s and (cfg.max_models is None or
                                                                   self.started < cfg.max_models)

        def record(rec: dict) -> None:
            if rec.get("failed"):
                self.record_failure(rec)
            self.done.add(rec["i"])
            self._append(rec)
            self._count(rec)
            self.summary.seconds += rec["seconds"]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(bad=self.summary.found_problems, unique=len(self.by_sig), skip=self.summary.skipped)

        self.started = 0
        try:
            if cfg.jobs <= 1:
                while more():
                    self.started += 1
                    record(check_one(next(pending), cfg))
            else:
                self._run_parallel(pending, more, record)
        finally:
            log.setLevel(level)
            if bar is not None:
                bar.close()
            self.summary.failures = list(self.by_sig.values())
            self.summary.wall_seconds = time.perf_counter() - t_start
            self.summary.run_models = self.started
            with open(os.path.join(cfg.out, "summary.json"), "w") as f:
                json.dump({**self.summary.to_json(), "wall_seconds": round(self.summary.wall_seconds, 1),
                           "jobs": cfg.jobs, "device": cfg.device}, f, indent=1)
            with open(os.path.join(cfg.out, "summary.txt"), "w") as f:
                f.write(self.summary.text() + "\n")
        return self.summary

    def _run_parallel(self, pending, more, record) -> None:
        """Keep 2 models per worker in flight; record results as they complete."""
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(self.cfg.jobs, mp_context=mp.get_context("spawn"),
                                    initializer=_worker_init) as pool:
            flying = set()
            while True:
                while more() and len(flying) < 2 * self.cfg.jobs:
                    self.started += 1
                    flying.add(pool.submit(check_one, next(pending), self.cfg))
                if not flying:
                    break
                finished, flying = cf.wait(flying, return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    record(fut.result())


def _failure_id(signature: str) -> str:
    return hashlib.sha1(signature.encode()).hexdigest()[:10]


def _worker_init() -> None:
    logging.getLogger("tilecraft").setLevel(logging.ERROR)


def check_one(index: int, cfg: CampaignConfig) -> dict:
    """Generate and check model `index` of the campaign: a JSON-able record (no reduction; safe in workers)."""
    seed = model_seed(cfg.seed, index)
    t0 = time.perf_counter()
    model, res = run_seed(seed, cfg.backend, cfg.device, cfg.dtypes)
    rec = {"i": index, "seed": seed, "nodes": len(model.graph.nodes),
           "dtype": str(model.dtype).replace("torch.", ""),
           "ops": dict(Counter(n.op for n in model.graph.nodes)), "patterns": model.patterns}
    if res.verdict is None:
        rec.update(status="skipped", message=res.skipped)
    else:
        v = res.verdict
        rec.update(status=v.status, outcome=v.outcome, key=v.key, message=v.message[:500], rules=dict(v.rules))
        if v.failed:
            rec["failed"] = True  # the parent dedups (and reduces) it
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def run_campaign(config: CampaignConfig) -> Summary:
    return Campaign(config).run()
