"""Running a bench/ script's `main` in this process, for the tests of its --dry-run."""
import importlib.util
import json
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
