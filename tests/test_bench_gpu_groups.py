"""bench/gpu_groups.py: a model's fusion groups as they would be on CUDA, worked out on the CPU. Checks the
GPU-side decisions on real HF models: BERT's attention becomes one SDPA whose output feeds cuBLAS directly (no
cast round trip as a matmul prologue), GPT-2's residual adds join the next LayerNorm (no add-only epilogue)."""
import subprocess
import sys


def _groups(model: str) -> list[str]:
    proc = subprocess.run([sys.executable, "bench/gpu_groups.py", "--model", model], capture_output=True, text=True,
                          timeout=600, env={"TRITON_INTERPRET": "1", **__import__("os").environ})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [" ".join(ln.split()[:-3]) for ln in proc.stdout.splitlines() if ln.startswith("  ")]


def test_bert_attention_output_reaches_cublas_without_a_cast_prologue():
    groups = _groups("bert")
    assert groups.count("torch sdpa") == 2, groups  # two layers, each one fused attention
    assert all(g.split()[0] != "matmul" or "cast" not in g for g in groups), groups
    assert groups.count("reduction add layer_norm") == 4, groups


def test_gpt2_residual_adds_join_the_next_layer_norm():
    groups = _groups("gpt2")
    assert groups.count("reduction add layer_norm") == 4, groups  # ln_2 of both layers, ln_1 of the 2nd, ln_f
    assert "pointwise add" not in groups and "matmul addmm add" not in groups, groups


def test_opt_residual_adds_join_norms_and_query_scale_folds_into_sdpa():
    """OPT flattens to [b*t, d] before one norm and views back to [b, t, d] before the next: each residual add
    moves to the shape its norm reads and joins it (no add-only kernel); q_proj(x) * scaling becomes the SDPA's
    scale (no epilogue kernel on q)."""
    groups = _groups("opt")
    assert groups.count("torch sdpa") == 2, groups
    assert groups.count("reduction add layer_norm") == 4, groups  # both norms of layer 1, layer 0's 2nd, final
    assert "pointwise add" not in groups and "matmul addmm mul" not in groups, groups
