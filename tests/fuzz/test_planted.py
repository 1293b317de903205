"""Planted bugs: a short campaign finds each injected fault and reduces it to a handful of nodes.

The faults live in the generated-kernel path (a pointwise Triton expression, the reduction template's row mask,
the emitter's broadcast mapping, the matmul template's epilogue); one lives in the reference interpreter and
is checked with codegen off (backend "tilecraft-interpreted").
"""
import json
import os

import pytest
import torch

from tilecraft.fuzz import planted
from tilecraft.fuzz.campaign import CampaignConfig, run_campaign
from tilecraft.fuzz.case import check_graph
from tilecraft.ir import Graph, TensorType


@pytest.mark.parametrize("fault", list(planted.FAULTS))
def test_campaign_finds_and_reduces_planted_fault(fault, tmp_path):
    f = planted.FAULTS[fault]
    with f.plant():
        summary = run_campaign(CampaignConfig(seed=3, out=str(tmp_path), backend=f.backend, time_s=60,
                                              max_models=25, progress=False, reduce_checks=150, reduce_seconds=45,
                                              stop_after_reduced=1))
    # found: wrong numbers, NaN where eager has none, or (a broadcast mapped to a row the template cannot read)
    # a kernel that no longer generates and falls back to torch
    assert summary.outcomes["mismatched"] + summary.outcomes["fell_back"] > 0, summary.text()
    reduced = [x for x in summary.failures if x.reduced_nodes is not None]
    assert reduced, summary.text()
    best = min(reduced, key=lambda x: x.reduced_nodes)
    assert best.reduced_nodes <= 5 and best.reduced_nodes < best.nodes, summary.text()
    src = open(os.path.join(os.path.dirname(best.repro), "reduced_model.py")).read()
    if f.keeps:
        assert any(op in src for op in f.keeps), src
    assert os.path.exists(best.repro)
    assert json.load(open(tmp_path / "summary.json"))["models"] == summary.models
    torch._dynamo.reset()
    ns = {}
    exec(compile(open(best.repro).read(), best.repro, "exec"), ns)
    ns[next(k for k in ns if k.startswith("test_"))]()  # fault undone: the repro passes


def _graph():
    """Covers every fault: sub, a broadcast [4,1] operand, a fused sum, a matmul with an activation epilogue."""
    g = Graph()
    x = g.add_input(TensorType((4, 6), torch.float32), "x")
    c = g.add_input(TensorType((4, 1), torch.float32), "c")
    w = g.add_input(TensorType((6, 5), torch.float32), "w")
    y = g.add("sub", [g.add("relu", [x]).out, 0.25]).out
    z = g.add("mul", [g.add("sub", [y, c]).out, 2.0]).out
    g.outputs = [g.add("sum", [z], {"dim": [1]}).out, g.add("tanh", [g.add("mm", [z, w]).out]).out]
    return g


def test_faults_are_undone_on_exit():
    for name, f in planted.FAULTS.items():
        with f.plant():
            assert check_graph(_graph(), f.backend).verdict.status == "wrong_result", name
        v = check_graph(_graph(), f.backend).verdict
        assert v.status == "ok", (name, v.message)
        assert not v.warnings, (name, v.warnings)  # every group ran as a kernel (codegen) without fallback


def test_fault_is_undone_after_an_error():
    with pytest.raises(KeyError):
        with planted.FAULTS["reduction_mask"].plant():
            raise KeyError("boom")
    assert check_graph(_graph()).verdict.status == "ok"
