"""Campaigns: resumable state, deterministic replay from a seed, the CLI."""
import json

from tilecraft.cli import main
from tilecraft.fuzz import planted
from tilecraft.fuzz.campaign import CampaignConfig, model_seed, run_campaign
from tilecraft.fuzz.case import run_seed
from tilecraft.fuzz.cli import parse_duration


def _cases(d):
    return [json.loads(line) for line in open(d / "cases.jsonl")]


def test_campaign_resumes_from_its_directory(tmp_path):
    s1 = run_campaign(CampaignConfig(seed=5, out=str(tmp_path), max_models=3, progress=False))
    assert s1.models == 3
    s2 = run_campaign(CampaignConfig(seed=5, out=str(tmp_path), max_models=2, progress=False))
    assert s2.models == 5  # counts carried over
    cases = _cases(tmp_path)
    assert [c["i"] for c in cases] == [0, 1, 2, 3, 4]
    assert [c["seed"] for c in cases] == [model_seed(5, i) for i in range(5)]
    assert all(c["status"] in ("ok", "skipped") for c in cases)


def test_replay_is_deterministic(tmp_path):
    with planted.wrong_pointwise("sub"):
        run_campaign(CampaignConfig(seed=2, out=str(tmp_path), max_models=8, progress=False, reduce=False))
        for c in _cases(tmp_path):
            model, res = run_seed(c["seed"])
            status = "skipped" if res.verdict is None else res.verdict.status
            assert status == c["status"]
            assert len(model.graph.nodes) == c["nodes"]
            if res.verdict is not None:
                assert res.verdict.key == c["key"]


def test_cli_campaign_and_replay(tmp_path, capsys):
    assert main(["fuzz", "--max-models", "2", "--out", str(tmp_path / "c"), "--seed", "9", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "models tried: 2" in out and "models/minute" in out and "rule coverage" in out
    assert main(["fuzz", "--replay", str(model_seed(9, 1)), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "class FuzzModel(torch.nn.Module)" in out and f"seed {model_seed(9, 1)}: ok" in out


def test_parse_duration():
    assert parse_duration("10m") == 600 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
