"""bench/models.py --dry-run: the whole-model benchmark's code paths on the CPU (interpreter), results checked."""
import json
import subprocess
import sys


def test_models_dry_run(tmp_path):
    out = tmp_path / "models.json"
    proc = subprocess.run([sys.executable, "bench/models.py", "--dry-run", "--models", "gpt2,llama_b1",
                           "--quant", "int8", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())
    rows = {(r["model"], r["backend"]): r for r in run["results"]}
    assert list(rows) == [("gpt2", "eager"), ("gpt2", "tilecraft"), ("llama_b1", "eager"),
                          ("llama_b1", "tilecraft"), ("llama_b1", "tilecraft_int8")]
    for (model, backend), r in rows.items():
        assert "error" not in r, r
        assert r["wall_ms"] > 0 and r["compile_s"] >= 0 and r["floor_ms"] > 0
        if backend == "eager":
            assert r["rel_err"] == 0.0
        elif backend == "tilecraft":  # float32 on the interpreter: matches eager closely
            assert r["rel_err"] < 1e-4, r
            assert r["tc_kernels"] > 0 and r["torch_ops"] == sum(r["torch_ops_by_op"].values())
        else:  # int8 weights: error against the float model, small but not zero
            assert 0 < r["rel_err"] < 5e-2, r
    # the FLOP count by hand for the tiny LLaMA (hidden 32, 2 layers, vocab 128, untied head), batch 1 x 8:
    # 2 x (parameters - the embedding table) x tokens + causal attention 4 x B x T^2 x d x layers / 2
    info = run["models"]["llama_b1"]
    assert (info["batch"], info["tokens"]) == (1, 8)
    assert info["flops"] == 2 * (info["params"] - 128 * 32) * 8 + 4 * 8 * 8 * 32 * 2 / 2
    assert run["meta"]["peaks"]["bandwidth"] > 0 and run["meta"]["peaks"]["flops"] > 0
    lines = proc.stdout.splitlines()
    assert any(line.startswith("llama_b1  tilecraft_int8") for line in lines)
    assert lines[-1].startswith("no tilecraft row with an Inductor row")  # no Inductor in a dry run
    # --table prints the same table again from the JSON alone
    table = subprocess.run([sys.executable, "bench/models.py", "--table", str(out)], capture_output=True,
                           text=True, timeout=120)
    assert table.returncode == 0, table.stderr[-2000:]
    assert [l for l in table.stdout.splitlines() if l.startswith("gpt2      ")] == \
        [l for l in lines if l.startswith("gpt2      ")]


def test_interleaved_rounds_alternate_the_order_and_keep_each_ones_results():
    from tilecraft.testing import interleaved_rounds

    order = []
    got = interleaved_rounds(["a", "b", "c"], 3, lambda f: order.append(f) or len(order))
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert got == [[1, 6, 7], [2, 5, 8], [3, 4, 9]]
