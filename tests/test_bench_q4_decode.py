"""bench/q4_decode_sweep.py --dry-run: the decode sweep's code path on the CPU (interpreter), int4 and int8, every
config checked against the dequantized reference before it would be timed."""
from tests.benches import run_bench


def test_q4_decode_sweep_dry_run(tmp_path, capsys):
    for scheme in ("int4", "int8"):
        out, data = run_bench("q4_decode_sweep", ["--dry-run", "--scheme", scheme], tmp_path / f"{scheme}.json",
                              capsys)
        assert data["dry_run"] and [(r["K"], r["N"]) for r in data["rows"]] == [(64, 64), (128, 96)]
        for r in data["rows"]:
            assert r["default"] is not None and r["top"]  # the heuristic default ran and passed its check
            assert all(t["rel_err"] < 2e-2 for t in r["top"])
        assert f"{scheme} decode, M=16" in out
