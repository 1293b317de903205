"""Dynamic shapes: one Dynamo compile with symbolic sizes, a tilecraft program per concrete shape."""
import torch

import tilecraft
from tilecraft.models import MLP, TransformerBlock
from tilecraft.testing import assert_close, seeded


def test_four_shapes_dynamic_true_one_dynamo_compile():
    model = TransformerBlock(d=32, heads=4).eval()
    compiled = tilecraft.compile(model, dynamic=True)
    with torch.no_grad():
        # batch and sequence both vary (not 1: Dynamo specializes sizes 0 and 1)
        for b, t in ((2, 8), (3, 12), (4, 8), (6, 5)):
            x = torch.randn(b, t, 32, generator=seeded(b))
            assert_close(compiled(x), model(x), scale=10)
        x = torch.randn(3, 12, 32, generator=seeded(30))  # a shape seen before reuses its program
        assert_close(compiled(x), model(x), scale=10)
    rep = compiled.report
    assert rep.dynamo_graphs == 1
    assert len(rep.graphs) == 4 and all(r.error is None and r.kernels for r in rep.graphs)
    assert all(not r.fallbacks for r in rep.graphs)
    templates = {k.template for r in rep.graphs for k in r.kernels}
    assert {"matmul", "reduction"} <= templates, templates


def test_mark_dynamic_through_torch_compile_backend():
    model = MLP().eval()
    report = tilecraft.compiler.CompileReport()
    compiled = torch.compile(model, backend=tilecraft.compiler.make_backend(report=report))
    with torch.no_grad():
        for b in (4, 6, 7):
            x = torch.randn(b, 16, generator=seeded(b))
            torch._dynamo.mark_dynamic(x, 0)
            assert_close(compiled(x), model(x))
    assert report.dynamo_graphs == 1 and len(report.graphs) == 3
    assert all(r.kernels for r in report.graphs)


def test_default_compile_does_not_raise_the_global_recompile_limit():
    before = torch._dynamo.config.recompile_limit
    compiled = tilecraft.compile(MLP().eval())
    with torch.no_grad():
        compiled(torch.randn(2, 16))
    assert torch._dynamo.config.recompile_limit == before
