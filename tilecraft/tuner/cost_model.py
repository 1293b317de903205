"""The XGBoost ranking cost model (objective rank:pairwise, one group per kernel problem), its records and metrics.

The trees learn a correction to an analytic prior: each config's score starts from minus its GEMM time estimate
over the roofline floor (`features.gemm_analytic_log`, XGBoost's base margin; 0 for other families), so ranking
on a problem unlike the training ones falls back to the physics instead of to the nearest training shape.

A measurement record is a plain JSON object:
    {"template": "matmul", "shapes": {"M": 512, "N": 512, "K": 512}, "dtype": "float16",
     "config": {"BLOCK_M": 64, ...}, "device": "H100" | {DeviceInfo fields}, "time_ms": 0.021, "status": "ok"}
`load_records(path)` reads JSON lines of those, a JSON list of them, or a JSON document with a "records" list
(the sweep files of bench/gemm_sweep.py and bench/tune_gemm.py); `score_records(model, records)` scores any of them.

`CostModel` is the protocol the search uses (fit / predict / save / load); `XGBoostCostModel` implements it.
The default model (trained on GPU sweeps by bench/eval_cost_model.py) lives at `default_model_path()`.
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import xgboost as xgb

from .device import DeviceInfo, lookup
from .features import FEATURE_NAMES, feature_matrix, featurize

FORMAT = "tilecraft-cost-model/1"


@dataclass
class Record:
    """One measurement of one config of one kernel problem on one device."""

    template: str
    shapes: dict
    dtype: str
    config: dict
    device: str | dict = "H100"
    time_ms: float | None = None
    status: str = "ok"
    kernel_key: str = ""

    def group(self) -> str:
        """Records with the same group are configs of the same problem: the unit ranking is judged on."""
        dev = self.device if isinstance(self.device, str) else self.device.get("name", "")
        return json.dumps([self.kernel_key, self.template, self.shapes, self.dtype, dev], sort_keys=True)

    def device_info(self) -> DeviceInfo:
        return lookup(self.device)

    def features(self) -> list[float]:
        f = featurize(self.template, self.shapes, self.dtype, self.config, self.device_info())
        return [f[n] for n in FEATURE_NAMES]

    def to_json(self) -> dict:
        return {"template": self.template, "shapes": self.shapes, "dtype": self.dtype, "config": self.config,
                "device": self.device, "time_ms": self.time_ms, "status": self.status, "kernel_key": self.kernel_key}

    @classmethod
    def from_json(cls, d: dict) -> "Record":
        missing = [k for k in ("template", "shapes", "dtype", "config") if k not in d]
        if missing:
            raise ValueError(f"measurement record lacks {missing}: {d}")
        status = d.get("status") or ("ok" if d.get("time_ms") is not None else "failed")
        return cls(d["template"], dict(d["shapes"]), str(d["dtype"]).replace("torch.", ""), dict(d["config"]),
                   d.get("device", "H100"), d.get("time_ms", d.get("time")), status, d.get("kernel_key", ""))


def load_records(path: str | os.PathLike) -> list[Record]:
    """Read measurement records: JSON lines (blank lines ignored), a JSON list, or a JSON object holding a
    "records" list (sweep files). A bench/tune_gemm.py summary without "records" yields the configs it names
    with their times (best and default per shape)."""
    text = Path(path).read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None  # JSON lines
    if isinstance(doc, dict) and "template" not in doc:
        items = doc["records"] if "records" in doc else _summary_records(doc)
        where = lambda i: f"{path}: records[{i}]"  # noqa: E731
    elif isinstance(doc, list):
        items, where = doc, (lambda i: f"{path}: record {i}")
    else:
        items, where = [], None
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    items.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i + 1}: bad measurement record: {e}") from None
        out = []
        for i, d in items:
            try:
                out.append(Record.from_json(d))
            except ValueError as e:
                raise ValueError(f"{path}:{i + 1}: bad measurement record: {e}") from None
        return out
    out = []
    for i, d in enumerate(items):
        try:
            out.append(Record.from_json(d))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where(i)}: bad measurement record: {e}") from None
    return out


def _summary_records(doc: dict) -> list[dict]:
    """Records in an old bench/tune_gemm.py summary (no per-config table): its cuBLAS-section best configs of the
    reference GEMM and the codegen section's default and best configs, on the summary's device."""
    dev = doc.get("device", "H100")
    out = []
    for row in doc.get("cublas", []):
        M, N, K = row["shape"]
        out.append({"template": "matmul", "shapes": {"M": M, "N": N, "K": K}, "dtype": row["dtype"],
                    "config": row["best_config"], "device": dev, "time_ms": row["best_ms"], "kernel_key": "reference"})
    for row in doc.get("codegen", []):
        M, N, K = row["shape"]
        for cfg, t in ((row.get("default_config"), row.get("default_ms")), (row.get("best_config"), row["best_ms"])):
            if cfg:
                out.append({"template": "matmul", "shapes": {"M": M, "N": N, "K": K}, "dtype": row["dtype"],
                            "config": cfg, "device": dev, "time_ms": t, "kernel_key": row.get("kernel", "codegen")})
    return out


def save_records(records: list[Record], path: str | os.PathLike) -> None:
    with open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r.to_json(), sort_keys=True) + "\n")


def relevance(times: list[float | None]) -> list[float]:
    """Relevance per config of one group: -log2(time / the group's best), so every pair of different times is
    ordered (a floor would tie the slow tail, half of a large GEMM's configs); a failed config ranks 1 below the
    slowest one."""
    ok = [t for t in times if t is not None and t > 0]
    if not ok:
        return [0.0] * len(times)
    best = min(ok)
    worst = -math.log2(max(ok) / best)
    return [worst - 1.0 if (t is None or t <= 0) else -math.log2(t / best) for t in times]


PRIOR_FEATURE = "analytic_log"  # the base margin: minus this feature (log2 of estimate / floor), 0 where missing
_PRIOR_COL = FEATURE_NAMES.index(PRIOR_FEATURE)


def prior_margin(x: np.ndarray) -> np.ndarray:
    """The analytic prior score of feature rows (higher = predicted faster)."""
    return -np.nan_to_num(np.asarray(x, dtype=np.float32)[:, _PRIOR_COL], nan=0.0)


class CostModel(Protocol):
    """What search needs from a cost model: scores per config, higher = predicted faster, comparable only within
    one kernel problem; trained from measurement records."""

    trained: bool

    def fit(self, records: list[Record]) -> "XGBoostCostModel": ...

    def predict(self, template: str, shapes: dict, dtype, configs: list[dict], device: DeviceInfo) -> np.ndarray: ...

    def save(self, path: str | os.PathLike) -> None: ...

    @classmethod
    def load(cls, path: str | os.PathLike) -> "XGBoostCostModel": ...


class XGBoostCostModel:
    """XGBoost rank:pairwise over `features.featurize` rows (one group per kernel problem, every pair of its
    configs), on top of the analytic prior (`prior_margin`). A loaded model is a prior too: `fit` then adds trees
    on top of it instead of starting over (transfer from the sweeps it was made on)."""

    def __init__(self, num_rounds: int = 80, params: dict | None = None):
        self.num_rounds = num_rounds
        self.params = {"objective": "rank:pairwise", "lambdarank_pair_method": "topk",
                       "lambdarank_num_pair_per_sample": 256, "eta": 0.15, "max_depth": 6, "min_child_weight": 1,
                       "tree_method": "hist", "seed": 0, "nthread": 2, "verbosity": 0, **(params or {})}
        self.booster: xgb.Booster | None = None
        self.base: xgb.Booster | None = None  # set by load(): fit continues from it
        self.n_train = 0

    @property
    def trained(self) -> bool:
        return self.booster is not None

    def fit(self, records: list[Record]) -> "XGBoostCostModel":
        """Train from scratch on all records (groups = one kernel problem each). Online use: call after batches."""
        groups: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            groups[r.group()].append(r)
        rows, labels, sizes = [], [], []
        for g in sorted(groups):
            rs = groups[g]
            if len(rs) < 2:
                continue
            rows.extend(r.features() for r in rs)
            labels.extend(relevance([r.time_ms if r.status == "ok" else None for r in rs]))
            sizes.append(len(rs))
        if not sizes:
            raise ValueError("the cost model needs at least one kernel problem with >= 2 measured configs")
        x = np.asarray(rows, dtype=np.float32)
        dm = xgb.DMatrix(x, label=np.asarray(labels, dtype=np.float32), feature_names=FEATURE_NAMES, missing=np.nan,
                         base_margin=prior_margin(x))
        dm.set_group(sizes)
        if self.base is not None:
            self.booster = xgb.train(self.params, dm, num_boost_round=max(10, self.num_rounds // 4),
                                     xgb_model=self.base.copy())
        else:
            self.booster = xgb.train(self.params, dm, num_boost_round=self.num_rounds)
        self.n_train = len(rows)
        return self

    def _predict_rows(self, x: np.ndarray) -> np.ndarray:
        if self.booster is None:
            raise RuntimeError("the cost model is not trained yet (call fit or load)")
        return self.booster.predict(xgb.DMatrix(x, feature_names=FEATURE_NAMES, missing=np.nan,
                                                base_margin=prior_margin(x)))

    def predict(self, template: str, shapes: dict, dtype, configs: list[dict], device: DeviceInfo) -> np.ndarray:
        """Scores for configs of one problem (higher = predicted faster)."""
        if not configs:
            return np.zeros(0)
        return self._predict_rows(feature_matrix(template, shapes, dtype, configs, device))

    def predict_records(self, records: list[Record]) -> np.ndarray:
        if not records:
            return np.zeros(0)
        return self._predict_rows(np.asarray([r.features() for r in records], dtype=np.float32))

    def save(self, path: str | os.PathLike) -> None:
        """One JSON file: format tag, feature names, params and the XGBoost model in its JSON form."""
        if self.booster is None:
            raise RuntimeError("cannot save an untrained cost model")
        raw = json.loads(bytes(self.booster.save_raw("json")).decode())
        doc = {"format": FORMAT, "features": FEATURE_NAMES, "params": self.params, "num_rounds": self.num_rounds,
               "n_train": self.n_train, "booster": raw}
        tmp = f"{path}.tmp{os.getpid()}"
        Path(tmp).write_text(json.dumps(doc))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "XGBoostCostModel":
        doc = json.loads(Path(path).read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"{path} is not a tilecraft cost model (format {doc.get('format')!r}, want {FORMAT!r})")
        if doc["features"] != FEATURE_NAMES:
            raise ValueError(f"{path} was trained on a different feature set; retrain it")
        m = cls(doc["num_rounds"], doc["params"])
        m.booster = xgb.Booster()
        m.booster.load_model(bytearray(json.dumps(doc["booster"]).encode()))
        m.base = m.booster
        m.n_train = doc.get("n_train", 0)
        return m


def default_model_path() -> Path:
    """Where the tuner looks for its pre-trained model: $TILECRAFT_COST_MODEL, else the one shipped in the
    package (written by bench/eval_cost_model.py --save-default)."""
    env = os.environ.get("TILECRAFT_COST_MODEL")
    return Path(env) if env else Path(__file__).with_name("data") / "cost_model.json"


def load_default_model() -> XGBoostCostModel | None:
    """The pre-trained default model, or None when there is none (or it was made for other features)."""
    path = default_model_path()
    if not path.exists():
        return None
    try:
        return XGBoostCostModel.load(path)
    except ValueError as e:
        import logging

        logging.getLogger("tilecraft.tuner").warning("tilecraft: ignoring the default cost model: %s", e)
        return None


def score_records(model: CostModel, records: list[Record]) -> list[float]:
    """Score measurement records (e.g. from `load_records`) with a trained model.

    Returns one float per record, higher meaning predicted faster. Scores rank configs within a group (same
    kernel, shapes, dtype and device); their absolute values and comparisons across groups mean nothing.
    Times and statuses in the records are ignored, so a model can be judged on data it never saw.
    """
    return [float(s) for s in model.predict_records(records)]


def _grouped(records: list[Record], scores) -> dict[str, list[tuple[float, float]]]:
    g: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r, s in zip(records, scores):
        if r.status == "ok" and r.time_ms is not None:
            g[r.group()].append((float(s), float(r.time_ms)))
    return g


def pairwise_accuracy(records: list[Record], scores) -> float:
    """Fraction of same-group pairs (ok, different times) whose score order matches the time order."""
    agree = total = 0
    for items in _grouped(records, scores).values():
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (si, ti), (sj, tj) = items[i], items[j]
                if ti == tj:
                    continue
                total += 1
                agree += (si > sj) == (ti < tj) if si != sj else 0.5
    return agree / total if total else float("nan")


def top_k_recall(records: list[Record], scores, k: int = 5) -> float:
    """Per group, the share of the truly fastest k configs found among the model's top k; averaged."""
    vals = []
    for items in _grouped(records, scores).values():
        kk = min(k, len(items))
        true_top = set(sorted(range(len(items)), key=lambda i: items[i][1])[:kk])
        pred_top = set(sorted(range(len(items)), key=lambda i: -items[i][0])[:kk])
        vals.append(len(true_top & pred_top) / kk)
    return float(np.mean(vals)) if vals else float("nan")


def best_in_top_k(records: list[Record], scores, k: int = 5) -> float:
    """Share of groups whose fastest config is among the model's top k."""
    vals = []
    for items in _grouped(records, scores).values():
        best = min(range(len(items)), key=lambda i: items[i][1])
        pred_top = sorted(range(len(items)), key=lambda i: -items[i][0])[:k]
        vals.append(1.0 if best in pred_top else 0.0)
    return float(np.mean(vals)) if vals else float("nan")


def evaluate(model: CostModel, records: list[Record], k: int = 5) -> dict:
    """The model's metrics on (held-out) records: pairwise accuracy, top-k recall, best-in-top-k."""
    scores = score_records(model, records)
    return {"pairwise_accuracy": pairwise_accuracy(records, scores), f"top{k}_recall": top_k_recall(records, scores, k),
            f"best_in_top{k}": best_in_top_k(records, scores, k), "records": len(records),
            "groups": len({r.group() for r in records})}
