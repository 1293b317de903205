"""The schedule database: SQLite (WAL, busy timeout, one transaction per record), safe for several processes.

A schedule record is plain data (DESIGN.md "Schedules are data"): kernel key, template, shape key, dtype,
device name, compute capability, Triton version, config (JSON of knob -> number), time, status, timestamp, and
whether the time is simulated (CPU runs, `tune --simulate`): simulated times are never taken for a real device's.
Configs are parsed as JSON and validated as flat dicts of numbers; nothing is ever executed or unpickled.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..ir.types import next_pow2

log = logging.getLogger("tilecraft.tuner")

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kernel_key TEXT NOT NULL,
    template TEXT NOT NULL,
    shape_key TEXT NOT NULL,
    dtype TEXT NOT NULL,
    device TEXT NOT NULL,
    capability TEXT NOT NULL,
    triton_version TEXT NOT NULL,
    config TEXT NOT NULL,
    time_ms REAL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    timestamp REAL NOT NULL,
    error TEXT,
    simulated INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS schedules_unique ON schedules
    (kernel_key, shape_key, dtype, device, triton_version, config, status, ifnull(time_ms, -1), timestamp);
CREATE INDEX IF NOT EXISTS schedules_lookup ON schedules (kernel_key, shape_key, dtype, device, triton_version);
"""

COLUMNS = ["kernel_key", "template", "shape_key", "dtype", "device", "capability", "triton_version", "config",
           "time_ms", "status", "timestamp", "error", "simulated"]


def default_db_path() -> str:
    """$TILECRAFT_SCHEDULES, else ~/.cache/tilecraft/schedules.sqlite."""
    return os.environ.get("TILECRAFT_SCHEDULES") or os.path.join(
        os.path.expanduser("~"), ".cache", "tilecraft", "schedules.sqlite")


def shape_key(shapes: dict) -> str:
    """A canonical shape key: sorted `name=value` pairs, e.g. "B=1,K=64,M=32,N=32"."""
    return ",".join(f"{k}={shapes[k]}" for k in sorted(shapes))


def parse_shape_key(key: str) -> dict:
    """The inverse of `shape_key` ("B=1,K=64" -> {"B": 1, "K": 64}); non-integer sizes stay strings."""
    out = {}
    for part in filter(None, key.split(",")):
        k, _, v = part.partition("=")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def shape_bucket(shapes: dict) -> str:
    """The shape bucket of a problem: every size rounded up to the next power of two."""
    return shape_key({k: (next_pow2(v) if v else 1) if isinstance(v, int) else v for k, v in shapes.items()})


_WARNED: set = set()


def warn_once(key, msg: str, *args) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(msg, *args)


def parse_config(text: str) -> dict:
    """Parse a stored config: JSON object of knob name -> int/float/bool/str; anything else is rejected."""
    cfg = json.loads(text)
    if not isinstance(cfg, dict) or not all(isinstance(k, str) and isinstance(v, (int, float, bool, str))
                                            for k, v in cfg.items()):
        raise ValueError(f"stored config is not a flat JSON object of knobs: {text[:200]}")
    return cfg


@dataclass
class ScheduleRecord:
    kernel_key: str
    template: str
    shape_key: str
    dtype: str
    device: str
    capability: str
    triton_version: str
    config: dict
    time_ms: float | None
    status: str = "ok"
    timestamp: float = field(default_factory=time.time)
    error: str | None = None
    simulated: bool = False  # the time comes from a simulated measurer (no GPU), not from the device named

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ScheduleRecord":
        missing = [c for c in COLUMNS if c not in d and c not in ("error", "simulated")]
        if missing:
            raise ValueError(f"schedule record lacks {missing}")
        cfg = d["config"] if isinstance(d["config"], dict) else parse_config(d["config"])
        parse_config(json.dumps(cfg))
        if d["status"] not in ("ok", "failed"):
            raise ValueError(f"schedule record status must be ok|failed, got {d['status']!r}")
        return cls(**{**{c: d.get(c) for c in COLUMNS}, "config": cfg, "simulated": bool(d.get("simulated"))})


class ScheduleDB:
    """A handle on one SQLite schedule file (one connection per handle; open one per process)."""

    def __init__(self, path: str | os.PathLike | None = None, timeout_s: float = 60.0):
        self.path = str(path or default_db_path())
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        for _ in range(50):  # switching to WAL needs a moment without other writers
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                time.sleep(0.05)
        self.conn.execute("PRAGMA synchronous = NORMAL")  # WAL+NORMAL: a killed process loses no commit
        self._migrate()
        self._write("".join(SCHEMA), script=True)

    def _migrate(self) -> None:
        """Databases written before the `simulated` column get it (0: their times were taken as measured)."""
        cols = [r[1] for r in self.conn.execute("PRAGMA table_info(schedules)")]
        if cols and "simulated" not in cols:
            self._write("ALTER TABLE schedules ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0")

    def _write(self, sql: str, params=(), script: bool = False, many: bool = False):
        for attempt in range(20):
            try:
                if script:
                    return self.conn.executescript(sql)
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    cur = self.conn.executemany(sql, params) if many else self.conn.execute(sql, params)
                    self.conn.execute("COMMIT")
                    return cur
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise sqlite3.OperationalError(f"schedule database {self.path} stayed locked")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _row(r: ScheduleRecord) -> tuple:
        return (r.kernel_key, r.template, r.shape_key, r.dtype, r.device, r.capability, r.triton_version,
                json.dumps(r.config, sort_keys=True), r.time_ms, r.status, r.timestamp, r.error, int(bool(r.simulated)))

    def add(self, record: ScheduleRecord) -> None:
        """Insert one record in its own transaction (committed before returning)."""
        self._write(f"INSERT OR IGNORE INTO schedules ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                    self._row(record))

    def add_many(self, records: list[ScheduleRecord]) -> None:
        self._write(f"INSERT OR IGNORE INTO schedules ({','.join(COLUMNS)}) VALUES ({','.join('?' * len(COLUMNS))})",
                    [self._row(r) for r in records], many=True)

    def _records(self, where: str = "", params=()) -> list[ScheduleRecord]:
        cur = self.conn.execute(f"SELECT {','.join(COLUMNS)} FROM schedules {where} ORDER BY id", params)
        out = []
        for row in cur.fetchall():
            d = dict(zip(COLUMNS, row))
            try:
                d["config"] = parse_config(d["config"])
            except (ValueError, json.JSONDecodeError) as e:
                log.warning("tilecraft: skipping a malformed schedule record in %s: %s", self.path, e)
                continue
            d["simulated"] = bool(d["simulated"])
            out.append(ScheduleRecord(**d))
        return out

    def all(self) -> list[ScheduleRecord]:
        return self._records()

    def count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM schedules").fetchone()[0]

    def best(self, kernel_key: str, shape_key: str, dtype: str, device: str, triton_version: str,
             capability: str | None = None, simulated_ok: bool = True) -> ScheduleRecord | None:
        """The fastest ok record for exactly this kernel, shape, dtype, device and Triton version, else None
        (`simulated_ok=False`: measured records only). When only other devices/Triton versions have one, warns
        once per database and device (see `near_misses`)."""
        where = "WHERE kernel_key=? AND shape_key=? AND dtype=? AND device=? AND triton_version=? AND status='ok'"
        params = [kernel_key, shape_key, dtype, device, triton_version]
        if capability is not None:
            where += " AND capability=?"
            params.append(capability)
        if not simulated_ok:
            where += " AND simulated=0"
        rows = self._records(where + " AND time_ms IS NOT NULL", params)
        if rows:
            return min(rows, key=lambda r: r.time_ms)
        misses = self.near_misses(kernel_key, shape_key, dtype, device, triton_version)
        if misses:
            others = sorted({f"{r.device} (sm {r.capability}) / Triton {r.triton_version}" for r in misses})
            warn_once((self.path, device, triton_version, tuple(others)),
                      "tilecraft: %s has schedules recorded on %s; they are not applied on %s / Triton %s "
                      "(first: kernel %s shape %s %s). To use them as a starting point, tune here with "
                      "`tilecraft tune MODULE:FACTORY --prior-db %s`",
                      self.path, ", ".join(others), device, triton_version, kernel_key, shape_key, dtype, self.path)
        return None

    def bucket_best(self, template: str, shapes: dict, dtype: str, device: str, triton_version: str,
                    capability: str, knobs: set, simulated_ok: bool = True) -> ScheduleRecord | None:
        """The fastest ok record of the same template, dtype, device and Triton version whose shape falls in the
        same bucket (each size rounded up to a power of two) and whose config has the same knobs: the schedule
        for a shape the database has not seen (dynamic shapes)."""
        want = shape_bucket(shapes)
        rows = self._records("WHERE template=? AND dtype=? AND device=? AND triton_version=? AND capability=? "
                             "AND status='ok' AND time_ms IS NOT NULL" + ("" if simulated_ok else " AND simulated=0"),
                             (template, dtype, device, triton_version, capability))
        rows = [r for r in rows if set(r.config) == knobs and shape_bucket(parse_shape_key(r.shape_key)) == want]
        return min(rows, key=lambda r: r.time_ms) if rows else None

    def near_misses(self, kernel_key: str, shape_key: str, dtype: str, device: str,
                    triton_version: str) -> list[ScheduleRecord]:
        """Ok records of this kernel/shape/dtype recorded on another device or Triton version."""
        rows = self._records("WHERE kernel_key=? AND shape_key=? AND dtype=? AND status='ok' "
                             "AND (device != ? OR triton_version != ?)",
                             (kernel_key, shape_key, dtype, device, triton_version))
        return rows

    def export_text(self) -> str:
        """Every record as JSON text ({"format":..., "records": [...]})."""
        recs = [r.to_json() for r in self.all()]
        return json.dumps({"format": "tilecraft-schedules/1", "records": recs}, indent=1)

    def export_json(self, path: str | os.PathLike) -> int:
        """Write every record to a JSON file; returns how many."""
        text = self.export_text()
        Path(path).write_text(text)
        return len(json.loads(text)["records"])

    def import_text(self, text: str, source: str = "the input") -> int:
        """Add the records of exported JSON text (duplicates are ignored); returns how many were read."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source} is not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != "tilecraft-schedules/1":
            raise ValueError(f"{source} is not a tilecraft schedules export (format tilecraft-schedules/1)")
        recs = [ScheduleRecord.from_json(d) for d in doc["records"]]
        self.add_many(recs)
        return len(recs)

    def import_json(self, path: str | os.PathLike) -> int:
        """Add the records of an exported JSON file (duplicates are ignored); returns how many were read."""
        return self.import_text(Path(path).read_text(), str(path))
