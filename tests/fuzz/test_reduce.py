"""The reducer: its output still fails the same way, is smaller, and its pytest file reproduces the failure."""
import torch

from tilecraft.fuzz import planted
from tilecraft.fuzz.case import check_graph, run_seed
from tilecraft.fuzz.reduce import Reducer, repro_test
from tilecraft.passes.fusion import is_reduction


def _first_failure(fault, seeds=range(40)):
    for s in seeds:
        model, res = run_seed(s)
        if res.verdict is not None and res.verdict.failed and len(model.graph.nodes) >= 6:
            return model, res
    raise AssertionError("no failing model in the seeds tried")


def test_reduced_model_still_fails_and_is_smaller(tmp_path):
    with planted.reduction_mask_off_by_one():
        model, res = _first_failure("sum")
        red = Reducer(max_checks=150, max_seconds=60).reduce(res)
        small = red.reduced
        assert len(small.graph.nodes) < len(model.graph.nodes)
        assert len(small.graph.nodes) <= 5
        assert any(is_reduction(n) for n in small.graph.nodes)  # the faulty template stays in the repro
        again = check_graph(small.graph, seed=0)  # re-check from scratch: same failure key
        assert again.verdict.key == res.verdict.key
        path = tmp_path / "test_repro.py"
        path.write_text(repro_test(red, name="repro"))
        ns = {}
        exec(compile(path.read_text(), str(path), "exec"), ns)
        try:
            ns["test_repro"]()
        except AssertionError:
            pass
        else:
            raise AssertionError("the repro test passed while the fault was planted")
    torch._dynamo.reset()
    ns["test_repro"]()  # without the fault the repro passes: it tests exactly the planted bug
