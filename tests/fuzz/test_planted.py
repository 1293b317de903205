"""Planted bugs: a short campaign finds each injected fault and reduces it to a handful of nodes."""
import json
import os

import pytest
import torch

from tilecraft.fuzz import planted
from tilecraft.fuzz.campaign import CampaignConfig, run_campaign
from tilecraft.fuzz.case import check_graph
from tilecraft.ir import Graph, TensorType

FAULTS = ["wrong_sub", "dropped_epilogue", "sum_off_by_one", "mean_off_by_one"]


@pytest.mark.parametrize("fault", FAULTS)
def test_campaign_finds_and_reduces_planted_fault(fault, tmp_path):
    with planted.FAULTS[fault]():
        summary = run_campaign(CampaignConfig(seed=3, out=str(tmp_path), time_s=90, max_models=30, progress=False,
                                              reduce_checks=120, reduce_seconds=40))
    assert summary.per_class["wrong_result"] > 0, summary.text()
    reduced = [f for f in summary.failures if f.reduced_nodes is not None]
    assert reduced, summary.text()
    best = min(reduced, key=lambda f: f.reduced_nodes)
    assert best.reduced_nodes <= 5 and best.reduced_nodes < best.nodes
    src = open(os.path.join(os.path.dirname(best.repro), "reduced_model.py")).read()
    op_used = {"wrong_sub": "torch.sub", "sum_off_by_one": "torch.sum", "mean_off_by_one": "torch.mean"}.get(fault)
    if op_used:
        assert op_used in src, src
    else:  # the dropped epilogue: an activation stays in the repro
        assert any(a in src for a in ("relu", "gelu", "silu", "sigmoid", "tanh", "leaky_relu")), src
    assert os.path.exists(best.repro)
    assert json.load(open(tmp_path / "summary.json"))["models"] == summary.models


def test_faults_are_undone_on_exit():
    g = Graph()
    x = g.add_input(TensorType((4, 6), torch.float32), "x")
    y = g.add("sub", [g.add("relu", [x]).out, 0.25]).out
    g.outputs = [g.add(op, [y], {"dim": [1]}).out for op in ("sum", "mean", "amax")]
    for name in planted.FAULTS:
        with planted.FAULTS[name]():
            assert check_graph(g).verdict.status == "wrong_result", name
        assert check_graph(g).verdict.status == "ok", name
