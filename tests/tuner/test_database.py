"""The schedule database: concurrent writers, killed writers, JSON round trip, device/Triton matching."""
import json
import logging
import multiprocessing as mp
import os
import signal
import sqlite3
import time

import pytest
import torch
import triton

from tilecraft.tuner import DeviceInfo, PRESETS, ScheduleDB, ScheduleRecord, select_config, shape_key
from tilecraft.tuner.reference_kernels import ReferenceGemm

H100 = PRESETS["H100"]


def _rec(i, writer=0, device="NVIDIA H100 80GB HBM3", tv=triton.__version__, time_ms=None, key="k1"):
    return ScheduleRecord(key, "matmul", "B=1,K=64,M=32,N=32", "float16", device, "9.0", tv,
                          {"BLOCK_M": 16 * (1 + i % 4), "writer": writer, "i": i},
                          time_ms if time_ms is not None else 1.0 + i, "ok", time.time())


def _writer(path, writer, n):
    db = ScheduleDB(path)
    for i in range(n):
        db.add(_rec(i, writer))
    db.close()


def test_concurrent_writers_from_several_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "s.sqlite")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ScheduleDB(path) as db:
        recs = db.all()
        assert len(recs) == 240
        assert {(r.config["writer"], r.config["i"]) for r in recs} == {(w, i) for w in range(4) for i in range(60)}
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _endless_writer(path, ready):
    db = ScheduleDB(path)
    i = 0
    while True:
        db.add(_rec(i, 9))
        i += 1
        if i == 20:
            ready.set()


def test_a_writer_killed_mid_run_leaves_a_readable_db_with_its_commits(tmp_path):
    path = str(tmp_path / "s.sqlite")
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    p = ctx.Process(target=_endless_writer, args=(path, ready))
    p.start()
    assert ready.wait(60)
    time.sleep(0.2)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert p.exitcode == -signal.SIGKILL
    with ScheduleDB(path) as db:
        recs = db.all()
        assert len(recs) >= 20
        assert sorted(r.config["i"] for r in recs) == list(range(len(recs)))  # contiguous: every commit kept
        assert db.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.add(_rec(10 ** 6))  # and still writable
        assert db.count() == len(recs) + 1


def test_json_round_trip_and_idempotent_import(tmp_path):
    a = ScheduleDB(tmp_path / "a.sqlite")
    for i in range(5):
        a.add(_rec(i))
    a.add(ScheduleRecord("k2", "reduction", "cols=100,rows=8", "float32", "cpu-interpreter", "0.0", "3.6.0",
                         {"XBLOCK": 2}, None, "failed", time.time(), "OutOfResources"))
    a.export_json(tmp_path / "e.json")
    b = ScheduleDB(tmp_path / "b.sqlite")
    assert b.import_json(tmp_path / "e.json") == 6
    b.import_json(tmp_path / "e.json")
    assert [r.to_json() for r in b.all()] == [r.to_json() for r in a.all()]
    doc = json.loads((tmp_path / "e.json").read_text())
    doc["records"][0]["config"] = "__import__('os').system('echo pwned')"
    (tmp_path / "evil.json").write_text(json.dumps(doc))
    with pytest.raises(json.JSONDecodeError):
        b.import_json(tmp_path / "evil.json")


def test_best_matches_device_and_triton_version_exactly(tmp_path, caplog):
    db = ScheduleDB(tmp_path / "s.sqlite")
    db.add(_rec(0, time_ms=5.0))
    db.add(_rec(1, time_ms=2.0))
    db.add(_rec(2, time_ms=1.0, device="NVIDIA A100-SXM4-80GB"))
    db.add(_rec(3, time_ms=0.5, tv="2.0.0"))
    args = ("k1", "B=1,K=64,M=32,N=32", "float16")
    assert db.best(*args, "NVIDIA H100 80GB HBM3", triton.__version__).time_ms == 2.0
    with caplog.at_level(logging.INFO, logger="tilecraft.tuner"):
        assert db.best(*args, "NVIDIA L4", triton.__version__) is None
    assert "not applied on NVIDIA L4" in caplog.text
    assert len(db.near_misses(*args, "NVIDIA L4", triton.__version__)) == 4
    assert db.best(*args, "NVIDIA A100-SXM4-80GB", "9.9.9") is None


def test_select_config_uses_the_db_only_for_the_same_device(tmp_path, monkeypatch):
    k = ReferenceGemm(32, 32, 64, torch.float16)
    cfg = dict(k.default_config(), BLOCK_M=16, num_warps=2)
    path = str(tmp_path / "s.sqlite")
    with ScheduleDB(path) as db:
        db.add(ScheduleRecord(k.key, "matmul", shape_key(k.shapes), "float16", H100.name, "9.0", triton.__version__,
                              cfg, 0.01, "ok"))
        db.add(ScheduleRecord(k.key, "matmul", shape_key(k.shapes), "float16", H100.name, "9.0", triton.__version__,
                              dict(cfg, BLOCK_M=32), 0.5, "ok"))
    assert select_config(k, path, H100) == (cfg, "database")
    assert select_config(k, path, PRESETS["A100"]) == (k.default_config(), "default")
    assert select_config(ReferenceGemm(64, 32, 64, torch.float16), path, H100)[1] == "default"
    other_cc = DeviceInfo(H100.name, (8, 9), 132, H100.l2_bytes, H100.smem_per_block)
    assert select_config(k, path, other_cc)[1] == "default"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        select_config(k, str(tmp_path / "missing.sqlite"), H100)
    monkeypatch.setenv("TILECRAFT_SCHEDULES", path)
    assert select_config(k, None, H100) == (cfg, "database")
    monkeypatch.setenv("TILECRAFT_SCHEDULES", str(tmp_path / "none.sqlite"))
    assert select_config(k, None, H100) == (k.default_config(), "default")
