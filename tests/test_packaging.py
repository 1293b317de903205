"""Importing tilecraft leaves the process alone (no TRITON_INTERPRET in os.environ, no matplotlib backend), yet
without CUDA its own kernels still run through the interpreter; packaging metadata is what users install."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import os, sys
import torch
import tilecraft
from tilecraft.models import TransformerBlock
from tilecraft.tuner.reference_kernels import ReferenceGemm
assert "TRITON_INTERPRET" not in os.environ, "import tilecraft set TRITON_INTERPRET"
assert "matplotlib" not in sys.modules, "import tilecraft imported matplotlib"
torch.manual_seed(0)
m = TransformerBlock(d=32, heads=4).eval()
x = torch.randn(2, 8, 32)
c = tilecraft.compile(m)
with torch.no_grad():
    got = c(x)
torch.testing.assert_close(got, m(x), rtol=1e-5, atol=1e-5)
assert c.report.graphs[0].kernels and not c.report.graphs[0].fallbacks
k = ReferenceGemm(16, 16, 32, torch.float32)
args = k.make_args("cpu", 1)
k.launch(args)
torch.testing.assert_close(args[2], args[0] @ args[1], rtol=1e-4, atol=1e-4)
q = tilecraft.quantize(torch.nn.Sequential(torch.nn.Linear(64, 32)).eval(), "int8_weight_only")
with torch.no_grad():
    y = tilecraft.compile(q)(torch.randn(2, 64))
assert y.shape == (2, 32)
assert "TRITON_INTERPRET" not in os.environ
print("OK")
"""


def test_import_does_not_touch_the_environment_and_kernels_still_run_on_cpu():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
    assert "runs through torch" not in out.stderr and "failed" not in out.stderr, out.stderr[-3000:]


def test_pyproject_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"]
    assert "xgboost-cpu>=2.0; sys_platform != 'darwin'" in deps and "numpy<2.4" in deps and "torch>=2.7" in deps
    assert not any(d.startswith("matplotlib") for d in deps) and meta["optional-dependencies"]["plot"] == ["matplotlib"]
    assert meta["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert meta["entry-points"]["torch_dynamo_backends"] == {"tilecraft": "tilecraft.compiler.api:tilecraft_backend"}


def test_plots_without_matplotlib_are_a_clear_error(monkeypatch, tmp_path):
    import pytest

    from tilecraft.tuner.search import TuneResult
    from tilecraft.tuner.tune import plot_curve

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'tilecraft\[plot\]'"):
        plot_curve(TuneResult("k", "random"), tmp_path / "c.png", "t")
