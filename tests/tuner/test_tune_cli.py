"""Offline tuning end to end on CPU: `tilecraft tune` writes the DB and plots; a later compile/select uses it."""
import json
import os

import pytest
import torch

from tilecraft.cli import main
from tilecraft.tuner import PRESETS, ScheduleDB, select_config
from tilecraft.tuner.reference_kernels import tiny_gemms


def test_tune_cli_on_reference_kernels_then_select_config_uses_the_db(tmp_path, capsys):
    db, plots = str(tmp_path / "s.sqlite"), str(tmp_path / "plots")
    rc = main(["tune", "tilecraft.tuner.reference_kernels:tiny_gemms", "--budget", "10", "--db", db, "--plot", plots,
               "--no-progress", "--device", "cpu-interpreter"])
    out = capsys.readouterr().out
    assert rc == 0 and "speedup" in out and "gemm_32x32x64_float16" in out
    with ScheduleDB(db) as d:
        recs = d.all()
    assert len(recs) == 20 and all(r.status == "ok" for r in recs)
    pngs = sorted(os.listdir(plots))
    assert len(pngs) == 2 and all(open(os.path.join(plots, p), "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for k in tiny_gemms():
        cfg, src = select_config(k, db, PRESETS["cpu-interpreter"])
        best = min((r for r in recs if r.shape_key.endswith(f"M={k.M},N={k.N}") and r.dtype in str(k.dtype)),
                   key=lambda r: r.time_ms)
        assert src == "database" and cfg == best.config
        args = k.make_args("cpu", 7)  # the selected config computes the right answer
        k.launch(args, cfg)
        torch.testing.assert_close(args[2].float(), (args[0].float() @ args[1].float()), rtol=1e-2, atol=1e-2)
    assert main(["db", "show", "--db", db]) == 0
    assert "2 tuned kernels" in capsys.readouterr().out
    assert main(["db", "export", str(tmp_path / "e.json"), "--db", db]) == 0
    assert main(["db", "import", str(tmp_path / "e.json"), "--db", str(tmp_path / "b.sqlite")]) == 0
    assert len(json.loads((tmp_path / "e.json").read_text())["records"]) == 20
    with ScheduleDB(tmp_path / "b.sqlite") as b:
        assert b.count() == 20


def _codegen_landed() -> bool:
    try:
        import tilecraft.codegen.matmul  # noqa: F401
    except ImportError:
        try:
            import tilecraft.codegen.pointwise  # noqa: F401
        except ImportError:
            return False
    return True


def mlp_factory():
    from tilecraft.models import MLP

    torch.manual_seed(0)
    return MLP(16, 32, 8).eval(), (torch.randn(4, 16),)


@pytest.mark.skipif(not _codegen_landed(), reason="needs the lead's Triton codegen (tilecraft/codegen/*): without "
                    "it a compiled model has no kernels to tune")
def test_tune_a_tiny_model_then_compile_uses_the_tuned_configs(tmp_path, capsys):
    import tilecraft

    db = str(tmp_path / "s.sqlite")
    rc = main(["tune", f"{__name__}:mlp_factory", "--budget", "6", "--db", db, "--no-progress", "--simulate"])
    assert rc == 0, capsys.readouterr().out
    with ScheduleDB(db) as d:
        recs = d.all()
    assert recs
    model, inputs = mlp_factory()
    compiled = tilecraft.compile(model, schedules=db)
    with torch.no_grad():
        got = compiled(*inputs)
        torch.testing.assert_close(got, model(*inputs), rtol=1e-4, atol=1e-4)
    kernels = [k for g in compiled.report.graphs for k in g.kernels]
    assert kernels
    device = PRESETS["cpu-interpreter"]
    for k in kernels:
        mine = [r for r in recs if r.kernel_key == k.key and r.status == "ok"]
        if not mine:
            continue
        best = min(mine, key=lambda r: r.time_ms)
        assert k.config == best.config, (k.name, k.config, best.config)
        assert select_config(k, db, device) == (best.config, "database")


def test_tune_a_quantized_kernel_through_its_own_space(tmp_path):
    """The quant engineer's wq_gemv kernel declares its knobs; the tuner respects them and its check_config."""
    from tilecraft.quant.kernels import make_kernel
    from tilecraft.tuner.spaces import space_for_kernel
    from tilecraft.tuner.tune import tune_kernels

    k = make_kernel("int8_weight_only", 1, 32, 64, torch.float32)
    dev = PRESETS["cpu-interpreter"]
    sp = space_for_kernel(k, dev)
    assert sp.knobs["BLOCK_N"] == k.info["space"]["BLOCK_N"] and sp.size() > 10
    rows = tune_kernels([k], str(tmp_path / "s.sqlite"), budget=6, device_info=dev, progress=False)
    assert rows[0].measurements == 6 and rows[0].failed == 0
    cfg, src = select_config(k, str(tmp_path / "s.sqlite"), dev)
    assert src == "database" and cfg == rows[0].best_config
