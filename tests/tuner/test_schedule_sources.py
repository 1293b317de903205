"""Schedule sources: merged databases, shape buckets, simulated records (and the schema migration), the
warning for records made on another device."""
import logging
import sqlite3

import pytest
import torch
import triton

from tilecraft.tuner import PRESETS, ScheduleDB, ScheduleRecord, select_config, shape_key
from tilecraft.tuner.reference_kernels import ReferenceGemm

CPU, H100 = PRESETS["cpu-interpreter"], PRESETS["H100"]


def _add(path, k, cfg, ms, device=CPU, simulated=False):
    with ScheduleDB(path) as db:
        db.add(ScheduleRecord(k.key, "matmul", shape_key(k.shapes), "float16", device.name, device.capability_str,
                              triton.__version__, cfg, ms, "ok", simulated=simulated))


def test_merged_sources_first_match_wins(tmp_path):
    k = ReferenceGemm(32, 32, 64, torch.float16)
    a, b = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    cfg_a, cfg_b = dict(k.default_config(), BLOCK_M=16), dict(k.default_config(), num_warps=2)
    ScheduleDB(a).close()
    _add(b, k, cfg_b, 0.5)
    assert select_config(k, [a, b], CPU) == (cfg_b, "database")  # only b has it
    _add(a, k, cfg_a, 0.9)  # slower than b's, but a comes first
    assert select_config(k, [a, b], CPU) == (cfg_a, "database")
    assert select_config(k, [b, a], CPU) == (cfg_b, "database")


def test_unseen_shape_takes_its_buckets_record_and_computes_right(tmp_path):
    tuned = ReferenceGemm(32, 32, 64, torch.float16)
    path = str(tmp_path / "s.sqlite")
    cfg = dict(tuned.default_config(), BLOCK_M=16, BLOCK_N=16, BLOCK_K=32)
    _add(path, tuned, cfg, 0.1)
    k = ReferenceGemm(27, 30, 60, torch.float16)  # every size rounds up to the tuned one's
    got, src = select_config(k, path, CPU)
    assert got == cfg and src == "database (bucket B=1,K=64,M=32,N=32)"
    assert select_config(ReferenceGemm(33, 30, 60, torch.float16), path, CPU)[1] == "default"  # M bucket 64
    args = k.make_args("cpu", 3)
    k.launch(args, got)
    torch.testing.assert_close(args[2].float(), args[0].float() @ args[1].float(), rtol=1e-2, atol=1e-2)


def test_simulated_records_never_serve_a_real_device(tmp_path):
    k = ReferenceGemm(32, 32, 64, torch.float16)
    path = str(tmp_path / "s.sqlite")
    cfg = dict(k.default_config(), BLOCK_M=16)
    _add(path, k, cfg, 0.01, device=H100, simulated=True)  # `tune --simulate --device H100`
    assert select_config(k, path, H100) == (k.default_config(), "default")
    _add(path, k, dict(cfg, num_warps=8), 0.2, device=H100)  # a measured one is used, though "slower"
    assert select_config(k, path, H100) == (dict(cfg, num_warps=8), "database")
    _add(path, k, cfg, 0.01, device=CPU, simulated=True)  # on the interpreter, simulated is all there is
    assert select_config(k, path, CPU) == (cfg, "database")


def test_old_database_gains_the_simulated_column(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schedules (id INTEGER PRIMARY KEY AUTOINCREMENT, kernel_key TEXT NOT NULL, "
                "template TEXT NOT NULL, shape_key TEXT NOT NULL, dtype TEXT NOT NULL, device TEXT NOT NULL, "
                "capability TEXT NOT NULL, triton_version TEXT NOT NULL, config TEXT NOT NULL, time_ms REAL, "
                "status TEXT NOT NULL, timestamp REAL NOT NULL, error TEXT)")
    con.execute("INSERT INTO schedules (kernel_key, template, shape_key, dtype, device, capability, triton_version, "
                "config, time_ms, status, timestamp) VALUES ('k', 'matmul', 'M=1', 'float16', 'gpu', '9.0', '3.6.0', "
                "'{\"BLOCK_M\": 16}', 1.5, 'ok', 0)")
    con.commit()
    con.close()
    with ScheduleDB(path) as db:
        (old,) = db.all()
        assert old.simulated is False and old.time_ms == 1.5 and old.config == {"BLOCK_M": 16}
        db.add(ScheduleRecord("k", "matmul", "M=1", "float16", "gpu", "9.0", "3.6.0", {"BLOCK_M": 32}, 1.0,
                              simulated=True))
        assert [r.simulated for r in db.all()] == [False, True]
    out = tmp_path / "e.json"
    with ScheduleDB(path) as db:
        db.export_json(out)
    with ScheduleDB(tmp_path / "n.sqlite") as db:
        db.import_json(out)
        assert [r.simulated for r in db.all()] == [False, True]


def test_other_device_records_warn_once_with_how_to_use_them(tmp_path, caplog):
    k = ReferenceGemm(32, 32, 64, torch.float16)
    path = str(tmp_path / "s.sqlite")
    _add(path, k, dict(k.default_config(), BLOCK_M=16), 0.01, device=H100)
    with caplog.at_level(logging.WARNING, logger="tilecraft.tuner"):
        for _ in range(3):
            assert select_config(k, path, CPU)[1] == "default"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "not applied on" in r.getMessage()]
    assert len(warnings) == 1
    assert "--prior-db" in warnings[0].getMessage() and H100.name in warnings[0].getMessage()


def test_prior_db_records_start_a_tuning_run(tmp_path):
    from tilecraft.tuner.tune import prior_records, tune_kernels

    k = ReferenceGemm(16, 16, 32, torch.float16)
    other = str(tmp_path / "h100.sqlite")
    cfgs = [dict(k.default_config(), BLOCK_M=16, num_warps=w) for w in (2, 4, 8)]
    for i, c in enumerate(cfgs):
        _add(other, k, c, 0.1 * (i + 1), device=H100)
    prior = prior_records(other, k, CPU)
    assert [r.config for r in prior] == cfgs and [r.time_ms for r in prior] == pytest.approx([0.1, 0.2, 0.3])
    assert all(r.template == "matmul" and r.shapes == k.shapes for r in prior)
    here = str(tmp_path / "here.sqlite")
    rows = tune_kernels([k], here, budget=3, device_info=CPU, progress=False, prior_db=other)
    assert len(rows) == 1 and rows[0].measurements == 3 and rows[0].simulated
    with ScheduleDB(here) as db:
        recs = db.all()
    assert len(recs) == 3 and all(r.simulated and r.device == CPU.name for r in recs)
    assert select_config(k, here, CPU)[1] == "database"
