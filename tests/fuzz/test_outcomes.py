"""The four outcomes (matched / mismatched / crashed / fell back), the exit status, devices, inputs' layouts."""
import contextlib

import torch

from tilecraft.cli import main
from tilecraft.fuzz.campaign import CampaignConfig, run_campaign
from tilecraft.fuzz.case import check_graph
from tilecraft.fuzz.emit import build_inputs, input_layout
from tilecraft.fuzz.oracle import clone_strided
from tilecraft.fuzz.planted import patched
from tilecraft.ir import Graph, TensorType


def _graph():
    g = Graph()
    x = g.add_input(TensorType((4, 6), torch.float32), "x")
    g.outputs = [g.add("sum", [g.add("exp", [x]).out], {"dim": [1]}).out]
    return g


@contextlib.contextmanager
def failing_launches():
    """Every generated kernel fails to launch (the runtime falls back to torch for it)."""
    from tilecraft.codegen.kernel import Kernel

    def launch(self, args, config=None):
        raise RuntimeError("Pointer argument cannot be accessed from Triton (cpu tensor?)")

    with patched(Kernel, "launch", launch):
        yield


def test_fallback_is_its_own_outcome_with_right_numbers():
    v = check_graph(_graph()).verdict
    assert (v.status, v.outcome) == ("ok", "matched")
    with failing_launches():
        v = check_graph(_graph()).verdict
    assert (v.status, v.outcome) == ("fell_back", "fell_back"), v.message
    assert v.exc_type == "RuntimeError" and "launch fell back to torch" in v.message
    assert "cannot be accessed from Triton" in v.message


def test_mismatch_and_crash_outcomes():
    assert check_graph(_graph(), lambda gm, ex: (lambda *a: [o + 1 for o in gm(*a)])).verdict.outcome == "mismatched"

    def crash(gm, ex):
        raise ValueError("no")
    assert check_graph(_graph(), crash).verdict.outcome == "crashed"


def test_campaign_counts_fallbacks_reduces_them_and_exits_nonzero(tmp_path, capsys):
    with failing_launches():
        s = run_campaign(CampaignConfig(seed=4, out=str(tmp_path / "a"), max_models=3, progress=False,
                                        reduce_checks=30, reduce_seconds=20, max_reductions_per_key=1))
        assert s.outcomes["fell_back"] == s.checked > 0 and s.found_problems == s.checked, s.text()
        assert "fell back to torch 3" in s.text() or f"fell back to torch {s.checked}" in s.text()
        reduced = [f for f in s.failures if f.reduced_nodes is not None]
        assert reduced and reduced[0].reduced_nodes <= reduced[0].nodes and reduced[0].key.startswith("fell_back|")
        assert main(["fuzz", "--max-models", "1", "--out", str(tmp_path / "b"), "--no-progress", "--no-reduce",
                     "--device", "cpu"]) == 1
    assert main(["fuzz", "--max-models", "2", "--out", str(tmp_path / "c"), "--no-progress", "--device", "cpu",
                 "--dtypes", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "outcomes: matched in generated kernels 2, mismatched 0, crashed 0, fell back to torch 0" in out
    assert "bfloat16: matched 2" in out


def test_inputs_keep_their_layout():
    perm = TensorType((3, 4, 5), torch.float32, (1, 15, 3))  # dim 1 outermost, then 2, then 0
    step = TensorType((3, 4), torch.int32, (8, 2))
    assert input_layout(perm) == ("perm", [1, 2, 0]) and input_layout(step) == ("step", 2)
    a, b, c = build_inputs([((3, 4, 5), torch.float32, input_layout(perm)), ((3, 4), torch.int32, ("step", 2)),
                            ((6,), torch.bool)], seed=3)
    assert a.stride() == perm.strides and b.stride() == step.strides and b.dtype == torch.int32
    assert c.dtype == torch.bool and 0 < c.sum() < 6
    a2, b2, _ = build_inputs([((3, 4, 5), torch.float32), ((3, 4), torch.int32), ((6,), torch.bool)], seed=3)
    assert a2.is_contiguous() and not torch.equal(a, a2)  # same draws, other arrangement
    assert clone_strided(b).stride() == b.stride() and torch.equal(clone_strided(b), b)


def test_parallel_campaign_records_every_model(tmp_path):
    s = run_campaign(CampaignConfig(seed=6, out=str(tmp_path), max_models=4, progress=False, jobs=2))
    assert s.models == 4 and s.outcomes["matched"] + s.skipped == 4, s.text()


def test_big_models_path_on_small_shapes(tmp_path, monkeypatch):
    """The --big checks (device-drawn inputs, float64 reference, sliced comparison), at a size the CPU can run."""
    import json

    from tilecraft.fuzz import big

    assert big.run_big(str(tmp_path), "cpu", 0, 1) == []  # past 2^31 elements: CUDA only
    monkeypatch.setattr(big, "R", 37)
    monkeypatch.setattr(big, "N", 24)
    recs = big.run_big(str(tmp_path), "cpu", 0, 4)
    assert [r["outcome"] for r in recs] == ["matched"] * 4, recs
    assert json.load(open(tmp_path / "big.json"))[3]["case"] == "_gemm"
