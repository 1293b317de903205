"""The oracle: each failure class is recognized on synthetic backends; calibrated tolerances; signatures."""
import torch

from tilecraft.fuzz.case import check_graph
from tilecraft.fuzz.generator import generate
from tilecraft.fuzz.oracle import compare, message_pattern, rule_coverage
from tilecraft.ir import Graph, TensorType

SOURCE_GRAPH = None


def _graph():
    g = Graph()
    x = g.add_input(TensorType((3, 4), torch.float32), "x")
    w = g.add_input(TensorType((4, 5), torch.float32), "w")
    y = g.add("relu", [g.add("mm", [x, w]).out]).out
    g.outputs = [g.add("softmax", [y], {"dim": -1, "half_to_float": False}).out]
    return g


def _backend(transform):
    def backend(gm, example_inputs):
        def run(*args):
            return transform(gm(*args))
        return run
    return backend


def _compile_error(gm, example_inputs):
    raise NotImplementedError("no kernel for op 42")


def _crash(gm, example_inputs):
    def run(*args):
        raise IndexError("index 7 is out of bounds")
    return run


def _nan(outs):
    o = outs[0].clone()
    o.view(-1)[0] = float("nan")
    return (o,) + tuple(outs[1:])


CASES = {
    "ok": _backend(lambda outs: outs),
    "compile_error": _compile_error,
    "runtime_crash": _crash,
    "wrong_result": _backend(lambda outs: tuple(o + 1e-3 for o in outs)),
    "nan_inf_mismatch": _backend(_nan),
    "shape_dtype_mismatch": _backend(lambda outs: tuple(o.double() for o in outs)),
}


def test_every_class_is_recognized():
    for expected, backend in CASES.items():
        res = check_graph(_graph(), backend, seed=0)
        v = res.verdict
        assert v.status == expected, f"{expected}: got {v.status} ({v.message})"
    crash = check_graph(_graph(), _crash).verdict
    assert crash.exc_type == "IndexError" and "out of bounds" in crash.message
    err = check_graph(_graph(), _compile_error).verdict
    assert err.exc_type == "NotImplementedError"
    assert err.key == "compile_error|NotImplementedError|NotImplementedError: no kernel for op N"


def test_named_torch_backends_pass():
    g = generate(11).graph
    for name in ("eager", "aot_eager"):
        assert check_graph(g, name, seed=11).verdict.status == "ok"


def test_tolerance_is_calibrated_against_float64():
    ref = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    noisy_eager = (ref * 1.05).to(torch.float16)  # an eager that is itself 5% off float64
    accurate = ref.to(torch.float16)  # a backend closer to float64 than eager, but 5% from it
    assert compare([accurate], [noisy_eager])[0] == "wrong_result"  # the plain fp16 tolerance rejects it
    assert compare([accurate], [noisy_eager], [ref])[0] == "ok"  # calibrated: as accurate as eager, so fine
    assert compare([noisy_eager + 1.0], [noisy_eager], [ref])[0] == "wrong_result"  # far beyond eager's error


def test_message_pattern_blanks_incidentals():
    a = message_pattern("RuntimeError: node %v12 (from /tmp/x/fuzz_ab12.py:3) size 17 vs 0x1f")
    b = message_pattern("RuntimeError: node %add_3 (from /work/y.py:9) size 4 vs 0x2e")
    assert a == b


def test_rule_coverage_reads_the_compile_report():
    import tilecraft

    class M(torch.nn.Module):
        def forward(self, x):
            return x.sin() + x.sin()

    compiled = tilecraft.compile(M())
    x = torch.randn(4)
    torch.testing.assert_close(compiled(x), 2 * x.sin())
    cov = rule_coverage(compiled.report)
    assert cov["cse: removes sin"] == 1
