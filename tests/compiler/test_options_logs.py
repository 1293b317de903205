"""The backend's options= and mode=, max-autotune, explain's changed-pass view, and the torch._logging artifacts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tilecraft
from tilecraft.models import MLP
from tilecraft.testing import assert_close, seeded
from tilecraft.tuner import ScheduleDB

ROOT = Path(__file__).resolve().parents[2]


def test_backend_takes_options_and_mode():
    model = MLP().eval()
    x = torch.randn(3, 16, generator=seeded(1))
    compiled = torch.compile(model, backend="tilecraft", options={"codegen": False})
    with torch.no_grad():
        assert_close(compiled(x), model(x))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="tilecraft", mode="reduce-overhead")  # CUDA graphs (CPU: plain)
    with torch.no_grad():
        assert_close(compiled(x), model(x))


def test_unknown_mode_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown mode 'fastest'; known modes: default, max-autotune"):
        tilecraft.compile(MLP().eval(), mode="fastest")
    compiled = torch.compile(MLP().eval(), backend="tilecraft", mode="fastest")
    with pytest.raises(Exception, match="unknown mode 'fastest'"):
        compiled(torch.randn(2, 16))
    torch._dynamo.reset()
    compiled = torch.compile(MLP().eval(), backend="tilecraft", options={"bogus": 1})
    with pytest.raises(Exception, match=r"unknown option\(s\) \['bogus'\]"):
        compiled(torch.randn(2, 16))


def test_max_autotune_tunes_what_the_db_lacks_then_reuses_it(tmp_path):
    db = str(tmp_path / "s.sqlite")
    model = MLP().eval()
    x = torch.randn(4, 16, generator=seeded(2))
    compiled = tilecraft.compile(model, mode="max-autotune", schedules=db, autotune_seconds=30)
    with torch.no_grad():
        assert_close(compiled(x), model(x))
    kernels = compiled.report.graphs[0].kernels
    assert kernels and all(k.info["config_source"] == "tuned now (max-autotune)" for k in kernels)
    with ScheduleDB(db) as d:
        recs = d.all()
    assert {r.kernel_key for r in recs} == {k.key for k in kernels}
    assert all(r.simulated for r in recs)  # no GPU: simulated times, flagged as such
    torch._dynamo.reset()
    again = tilecraft.compile(model, mode="max-autotune", schedules=db)
    with torch.no_grad():
        assert_close(again(x), model(x))
    assert all(k.info["config_source"] == "database" for k in again.report.graphs[0].kernels)
    with ScheduleDB(db) as d:
        assert d.count() == len(recs)  # nothing tuned twice


def test_explain_shows_only_passes_that_changed_the_graph():
    text = tilecraft.explain(MLP().eval(), torch.randn(2, 16), print_result=False)
    assert "---- after import" in text and "---- after cse" not in text and "---- after dce" not in text
    assert "passes that changed nothing: canonicalize" in text and "dce" in text.split("changed nothing:")[1]


def test_torch_logs_artifacts():
    script = ("import torch, tilecraft\nfrom tilecraft.models import MLP\n"
              "m = MLP().eval()\nwith torch.no_grad(): tilecraft.compile(m)(torch.randn(2, 16))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**env, "TORCH_LOGS": "+tilecraft"})
    assert out.returncode == 0, out.stderr[-2000:]
    for artifact in ("tilecraft_graphs", "tilecraft_fusion", "tilecraft_kernels", "tilecraft_configs"):
        assert f"[__{artifact}]" in out.stderr, artifact
    assert "rules: matmul-epilogue" in out.stderr and "@triton.jit" in out.stderr
    assert "config {'BLOCK_M'" in out.stderr and "from default" in out.stderr
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         env={**env, "TILECRAFT_LOGS": "configs"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[__tilecraft_configs]" in out.stderr and "[__tilecraft_kernels]" not in out.stderr
    assert "@triton.jit" not in out.stderr
