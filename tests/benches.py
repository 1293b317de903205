"""Running a bench/ script's `main` in this process, for the tests of its --dry-run."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    """bench/<name>.py as a module, registered under its name (its dataclasses and worker processes look it up)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def run_bench(name: str, argv: list[str], out: Path, capsys) -> tuple[str, dict]:
    """Run bench/<name>.py's main with `argv` and `--out out`; it must exit 0. Returns what it printed and the
    JSON it wrote."""
    assert load_bench(name).main(argv + ["--out", str(out)]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


def run_with_qgemm_ptx(body: str) -> str:
    """Run `body` in a fresh Python that has imported bench/qgemm_ptx.py (as `qgemm_ptx`; it sets
    TRITON_INTERPRET=0 before tilecraft is imported, so Triton's CUDA backend compiles for sm_90 on the CPU: it
    cannot in a process that defined its kernels for the interpreter). Must exit 0; returns its stdout."""
    script = f"import sys\nsys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'bench')!r}]\nimport qgemm_ptx\n{body}"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
