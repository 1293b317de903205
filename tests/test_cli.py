"""The command line, run as a user would: through subprocesses (`tilecraft ...` and `python -m tilecraft ...`)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from tilecraft.tuner import ScheduleDB, ScheduleRecord

ROOT = Path(__file__).resolve().parents[1]

FACTORY = '''
import torch
from tilecraft.tuner.reference_kernels import ReferenceGemm


def kernels():
    return [ReferenceGemm(16, 16, 32, torch.float32)]


class Scaled(torch.nn.Module):
    def forward(self, x):
        return torch.softmax(x * 3.0, dim=-1) + 1


def model():
    return Scaled().eval(), (torch.randn(4, 8),)
'''


@pytest.fixture
def env(tmp_path):
    """An isolated environment: caches, schedules and temp files under tmp_path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1", "TMPDIR": str(tmp_path / "tmp"),
            "TILECRAFT_CACHE": str(tmp_path / "cache"), "TILECRAFT_SCHEDULES": str(tmp_path / "default.sqlite")}


def run(args, env, cwd, stdin=None, console=False):
    exe = [shutil.which("tilecraft")] if console else [sys.executable, "-m", "tilecraft"]
    (Path(env["TMPDIR"])).mkdir(exist_ok=True)
    return subprocess.run(exe + args, capture_output=True, text=True, env=env, cwd=cwd, input=stdin, timeout=600)


def _db_with_records(path, n=3):
    with ScheduleDB(path) as db:
        for i in range(n):
            db.add(ScheduleRecord("k", "matmul", "M=16", "float32", "cpu-interpreter", "0.0", triton.__version__,
                                  {"BLOCK_M": 16 << i}, 1.0 + i, simulated=True))


def test_version_help_and_python_m(env, tmp_path):
    out = run(["--version"], env, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "tilecraft 0.1.0"
    out = run(["--help"], env, tmp_path)
    assert out.returncode == 0 and "cache" in out.stdout and "bench" not in out.stdout


def test_db_show_and_export_of_a_missing_path_are_errors_and_create_nothing(env, tmp_path):
    for action in (["show"], ["export", str(tmp_path / "e.json")]):
        out = run(["db", *action, "--db", str(tmp_path / "typo.sqlite")], env, tmp_path)
        assert out.returncode == 1 and "no schedule database at" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "typo.sqlite").exists() and not (tmp_path / "e.json").exists()


def test_db_import_missing_or_bad_file_is_a_clear_error(env, tmp_path):
    out = run(["db", "import", str(tmp_path / "missing.json"), "--db", str(tmp_path / "s.sqlite")], env, tmp_path)
    assert out.returncode == 1 and "cannot read" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "bad.json").write_text("{not json")
    out = run(["db", "import", str(tmp_path / "bad.json"), "--db", str(tmp_path / "s.sqlite")], env, tmp_path)
    assert out.returncode == 1 and "is not JSON" in out.stderr and "Traceback" not in out.stderr


def test_db_export_import_with_files_and_dashes(env, tmp_path):
    src = str(tmp_path / "src.sqlite")
    _db_with_records(src)
    out = run(["db", "export", "--db", src, str(tmp_path / "e.json")], env, tmp_path)  # --db before FILE
    assert out.returncode == 0, out.stderr
    assert len(json.loads((tmp_path / "e.json").read_text())["records"]) == 3
    out = run(["db", "export", "-", "--db", src], env, tmp_path)
    assert out.returncode == 0 and not (tmp_path / "-").exists()
    doc = json.loads(out.stdout)
    assert [r["config"]["BLOCK_M"] for r in doc["records"]] == [16, 32, 64] and all(
        r["simulated"] for r in doc["records"])
    out = run(["db", "import", "-", "--db", str(tmp_path / "dst.sqlite")], env, tmp_path, stdin=out.stdout)
    assert out.returncode == 0, out.stderr
    with ScheduleDB(tmp_path / "dst.sqlite") as db:
        assert [r.time_ms for r in db.all()] == [1.0, 2.0, 3.0]
    out = run(["db", "show", "--db", str(tmp_path / "dst.sqlite")], env, tmp_path)
    assert out.returncode == 0 and "3 records" in out.stdout and "SIMULATED" in out.stdout


def test_tune_finds_a_module_in_the_cwd_and_labels_simulated_times(env, tmp_path):
    (tmp_path / "mymodels.py").write_text(FACTORY)
    db = str(tmp_path / "s.sqlite")
    args = ["tune", "mymodels:kernels", "--budget", "3", "--db", db, "--no-progress"]
    out = run(args, env, tmp_path, console=bool(shutil.which("tilecraft")))  # console scripts miss the cwd
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("SIMULATED") and lines[1].startswith("kernel")  # the label comes first
    with ScheduleDB(db) as d:
        recs = d.all()
    assert len(recs) == 3 and all(r.simulated for r in recs)
    out = run(["tune", "nosuchmodule:f", "--db", db], env, tmp_path)
    assert out.returncode == 2 and "no module 'nosuchmodule'" in out.stderr and "Traceback" not in out.stderr


def test_explain_any_model_from_a_factory(env, tmp_path):
    (tmp_path / "mymodels.py").write_text(FACTORY)
    out = run(["explain", "mymodels:model"], env, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "---- after import" in out.stdout and "softmax" in out.stdout and "@triton.jit" in out.stdout
    assert "layer_norm" not in out.stdout  # not the built-in block


def test_cache_info_and_clear(env, tmp_path):
    kernels = tmp_path / "cache" / "kernels" / "triton-x"
    kernels.mkdir(parents=True)
    for i in range(3):
        (kernels / f"k{i}.py").write_text("x" * 100)
    _db_with_records(env["TILECRAFT_SCHEDULES"])
    out = run(["cache", "info"], env, tmp_path)
    assert out.returncode == 0
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert "3 files, 300 B" in rows["kernels"] and str(tmp_path / "cache" / "kernels") in rows["kernels"]
    assert env["TILECRAFT_SCHEDULES"] in rows["schedules"] and "absent" in rows["fuzz"]
    out = run(["cache", "clear"], env, tmp_path)
    assert out.returncode == 0 and "removed kernels: 3 files" in out.stdout and "kept schedules" in out.stdout
    assert not kernels.exists() and Path(env["TILECRAFT_SCHEDULES"]).exists()
    out = run(["cache", "clear", "--schedules"], env, tmp_path)
    assert out.returncode == 0 and not Path(env["TILECRAFT_SCHEDULES"]).exists()
