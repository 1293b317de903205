"""`torch.compile(m, backend="tilecraft")` in a fresh process that never imports tilecraft itself: Dynamo finds
the backend through the `torch_dynamo_backends` entry point of the installed package."""
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8),
                    torch.nn.Softmax(-1)).eval()
x = torch.randn(4, 16)
assert "tilecraft" not in sys.modules
compiled = torch.compile(m, backend="tilecraft")
with torch.no_grad():
    got, want = compiled(x), m(x)
torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
assert "tilecraft" in sys.modules  # the entry point loaded it
print("OK", sys.modules["tilecraft"].__file__)
"""


def test_backend_by_name_without_import():
    eps = [ep for ep in importlib.metadata.entry_points(group="torch_dynamo_backends") if ep.name == "tilecraft"]
    if not eps:
        pytest.skip("tilecraft is not pip-installed (no torch_dynamo_backends entry point)")
    assert eps[0].value == "tilecraft.compiler.api:tilecraft_backend"
    # no TRITON_INTERPRET either: Dynamo imports Triton (compiled form) before the entry point loads tilecraft,
    # whose kernels must still run through the interpreter on this CPU-only machine
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"OK {ROOT / 'tilecraft' / '__init__.py'}" in out.stdout
    assert "failed" not in out.stderr and "runs through torch" not in out.stderr, out.stderr[-3000:]


def test_backend_by_name_after_import():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", "import tilecraft\n" + SCRIPT.replace(
        'assert "tilecraft" not in sys.modules', "")], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
