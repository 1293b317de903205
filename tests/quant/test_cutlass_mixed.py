"""The CUTLASS mixed-input GEMM's CPU side (tilecraft/quant/cutlass): the repacked layouts give back tilecraft's
dequantized weights, the int4 reorder is CUTLASS's own layout (checked against the .cu when nvcc and the CUTLASS
headers are here), `available()` and `build()` fail softly / clearly. The kernels themselves run in
bench/cutlass_mixed.py on an H200."""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tilecraft.quant.cutlass as C
from tilecraft.quant import quantize_weight, unpack_int4

REPO = Path(__file__).resolve().parents[2]


def _cute_offsets(n: int, k: int) -> torch.Tensor:
    """offset[n, k] of the int4 weight in the reordered order, per the Python repack."""
    flat = C.reorder_int4(torch.arange(n * k).reshape(n, k))  # flat[offset] = n * K + k
    off = torch.empty(n * k, dtype=torch.long)
    off[flat] = torch.arange(n * k)
    return off.reshape(n, k)


def test_reorder_is_a_permutation_and_inverts():
    for n, k in [(16, 16), (32, 64), (48, 128)]:
        idx = torch.arange(n * k).reshape(n, k)
        flat = C.reorder_int4(idx)
        assert torch.equal(flat.sort().values, torch.arange(n * k))
        assert torch.equal(C.unreorder_int4(flat, n, k), idx)


def test_reorder_matches_cute_printout():
    """Rows of CUTLASS's tile_to_shape(compute_memory_reordering_atom<bf16, _, [0,2,4,6,1,3,5,7]>, (32, 32, 1)),
    as printed by cute on the host."""
    off = _cute_offsets(32, 32)
    assert off[0].tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 2, 6, 10, 14, 18, 22, 26, 30,
                               512, 516, 520, 524, 528, 532, 536, 540, 514, 518, 522, 526, 530, 534, 538, 542]
    assert off[8, :16].tolist() == [1, 5, 9, 13, 17, 21, 25, 29, 3, 7, 11, 15, 19, 23, 27, 31]
    assert off[17, :8].tolist() == [288, 292, 296, 300, 304, 308, 312, 316]
    assert off[31, 16:24].tolist() == [993, 997, 1001, 1005, 1009, 1013, 1017, 1021]


@pytest.mark.skipif(C.find_nvcc() is None or C.find_cutlass() is None, reason="needs nvcc and the CUTLASS headers")
def test_reorder_matches_the_kernel_layout(tmp_path):
    """Compile mixed_gemm.cu layout-only (host code, no kernels) and compare its int4 weight layout with ours."""
    prog = tmp_path / "layout.cu"
    prog.write_text(f'#define TC_MIXED_GEMM_LAYOUT_ONLY\n#include "{C.SOURCE}"\n#include <cstdio>\n#include <cstdlib>\n'
                    "int main(int argc, char** argv) {\n  int N = atoi(argv[1]), K = atoi(argv[2]);\n"
                    "  auto l = int4_weight_layout(N, K);\n  for (int n = 0; n < N; ++n)\n"
                    '    for (int k = 0; k < K; ++k) printf("%d\\n", int(l(n, k, 0)));\n}\n')
    inc, util = C.find_cutlass()
    exe = tmp_path / "layout"
    r = subprocess.run([str(C.find_nvcc()), "-std=c++17", "--expt-relaxed-constexpr", f"-I{inc}", f"-I{util}",
                        str(prog), "-o", str(exe)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    for n, k in [(32, 64), (48, 128)]:
        out = subprocess.run([str(exe), str(n), str(k)], capture_output=True, text=True, check=True).stdout
        got = torch.tensor([int(v) for v in out.split()]).reshape(n, k)
        assert torch.equal(got, _cute_offsets(n, k))


@pytest.mark.parametrize("n,k,group", [(64, 256, 128), (48, 512, 64), (32, 128, 128), (16, 64, 64)])
def test_repack_int4_round_trip(n, k, group):
    torch.manual_seed(0)
    qw = quantize_weight(torch.randn(n, k) * 0.02, "int4_weight_only", group)
    p = C.repack_int4(qw.qweight, qw.scales, qw.zeros, qw.group_size)
    assert p.qweight.dtype == torch.uint8 and p.qweight.shape == (n * k // 2,)
    assert p.scales.dtype == p.zeros.dtype == torch.bfloat16 and p.scales.shape == (k // qw.group_size, n)
    # the nibbles are exactly the signed codes q - 8, in the reordered order, low nibble first
    nib = torch.stack([p.qweight & 0xF, p.qweight >> 4], dim=1).reshape(-1)
    v = C.unreorder_int4(nib, n, k).to(torch.int16)
    assert torch.equal(torch.where(v >= 8, v - 16, v) + 8, unpack_int4(qw.qweight).to(torch.int16))
    # what the kernel computes from the layout is the dequantized weight, to bf16 rounding
    ref = qw.dequantize(torch.float32)
    got = C.dequantize_packed(p).float()
    assert got.shape == (n, k)
    err = (got - ref).abs()
    step = qw.scales.repeat_interleave(qw.group_size, dim=1)  # one quantization step
    assert float(err.max() / ref.abs().max()) < 1e-2
    assert bool((err <= 2 ** -8 * ref.abs() + 2 ** -4 * step + 1e-7).all())  # bf16 scale, zero, result


def test_repack_int8_round_trip():
    torch.manual_seed(1)
    qw = quantize_weight(torch.randn(80, 320), "int8_weight_only")
    p = C.repack(qw)
    assert p.qweight.data_ptr() == qw.qweight.data_ptr() or torch.equal(p.qweight, qw.qweight)
    assert p.scales.dtype == torch.bfloat16 and p.scales.shape == (80,) and p.zeros is None
    ref = qw.dequantize(torch.float32)
    got = C.dequantize_packed(p).float()
    assert bool(((got - ref).abs() <= 2 ** -7 * ref.abs() + 1e-7).all())


def test_repack_rejects_what_the_kernel_cannot_take():
    qw = quantize_weight(torch.randn(32, 256), "int4_weight_only", 32)
    with pytest.raises(C.CutlassError, match="group size 32"):
        C.repack(qw)
    with pytest.raises(C.CutlassError, match="N % 16"):
        C.repack(quantize_weight(torch.randn(24, 256), "int8_weight_only"))
    with pytest.raises(C.CutlassError, match="no kernel for scheme 'fp8'"):
        C.repack(quantize_weight(torch.randn(32, 256), "fp8"))


def test_mixed_gemm_checks_its_inputs_before_loading():
    p = C.repack(quantize_weight(torch.randn(32, 128), "int8_weight_only"))
    with pytest.raises(C.CutlassError, match="CUDA bf16"):
        C.mixed_gemm("int8_weight_only", torch.randn(4, 128, dtype=torch.bfloat16), p)
    with pytest.raises(C.CutlassError, match="packed for"):
        C.mixed_gemm("int4_weight_only", torch.randn(4, 128, dtype=torch.bfloat16), p)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine")
def test_available_is_false_without_cuda():
    assert C.available() is False


def test_available_never_raises(monkeypatch):
    def boom():
        raise RuntimeError("broken driver")
    monkeypatch.setattr(torch.cuda, "is_available", boom)
    assert C.available() is False


def test_build_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(C, "find_nvcc", lambda: None)
    with pytest.raises(C.CutlassError, match="nvcc not found"):
        C.build(tmp_path)
    monkeypatch.setattr(C, "find_nvcc", lambda: Path("/usr/bin/true"))
    monkeypatch.setattr(C, "find_cutlass", lambda: None)
    with pytest.raises(C.CutlassError, match="CUTLASS headers not found"):
        C.build(tmp_path)
    assert not list(tmp_path.iterdir())


def _fake_cutlass(root: Path) -> None:
    (root / "include" / "cutlass").mkdir(parents=True)
    (root / "include" / "cutlass" / "cutlass.h").write_text("")
    (root / "tools" / "util" / "include" / "cutlass" / "util").mkdir(parents=True)
    (root / "tools" / "util" / "include" / "cutlass" / "util" / "packed_stride.hpp").write_text("")


def test_find_cutlass_from_env_and_from_a_pip_target_dir(monkeypatch, tmp_path):
    _fake_cutlass(tmp_path / "checkout")
    monkeypatch.setenv("TILECRAFT_CUTLASS_DIR", str(tmp_path / "checkout"))
    assert C.find_cutlass() == (tmp_path / "checkout" / "include", tmp_path / "checkout" / "tools/util/include")
    monkeypatch.setenv("TILECRAFT_CUTLASS_DIR", str(tmp_path / "nothing"))
    assert C.find_cutlass() is None
    # `pip install --target site nvidia-cutlass` + PYTHONPATH=site: site/cutlass_library/source/...
    monkeypatch.delenv("TILECRAFT_CUTLASS_DIR")
    site = tmp_path / "site"
    (site / "cutlass_library").mkdir(parents=True)
    (site / "cutlass_library" / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    _fake_cutlass(site / "cutlass_library" / "source")
    monkeypatch.delitem(sys.modules, "cutlass_library", raising=False)
    monkeypatch.syspath_prepend(str(site))
    src = site / "cutlass_library" / "source"
    assert C.find_cutlass() == (src / "include", src / "tools" / "util" / "include")


def test_variant_table_and_flags(monkeypatch):
    assert C.DEFAULT_VARIANT == "c128" and C.VARIANTS["c128"] == []  # the default is the source's own config
    assert len(C.VARIANTS) <= 8  # the bench builds all of them in one GPU run
    for name, flags in C.VARIANTS.items():
        assert all(f.startswith("-DTC_") for f in flags), name
        assert C.variant_schemes(name), name
    assert C.variant_schemes("c256") == ("int4_weight_only", "int8_weight_only")
    assert C.variant_schemes("i8epi") == ("int8_weight_only",)
    monkeypatch.delenv("TILECRAFT_QMATMUL_CUTLASS", raising=False)
    assert C.default_variant() == "c128" and C.variant_flags() == []
    monkeypatch.setenv("TILECRAFT_QMATMUL_CUTLASS", "c256")
    assert C.default_variant() == "c256" and C.variant_flags() == ["-DTC_TILE_N=256"]
    assert C.default_variant("int4_weight_only") == "c256"  # a named variant wins over the scheme's own
    monkeypatch.setenv("TILECRAFT_QMATMUL_CUTLASS", "1")  # on, no variant named: each scheme's measured best
    assert C.default_variant("int8_weight_only") == "i8epi256" and C.default_variant("int4_weight_only") == "c256x2"
    assert all(s in C.variant_schemes(v) for s, v in C.SCHEME_VARIANTS.items())
    with pytest.raises(C.CutlassError, match="unknown variant 'nope'"):
        C.variant_flags("nope")


def test_nvcc_command_carries_the_flags():
    cmd = C.nvcc_command(Path("nvcc"), (Path("inc"), Path("util")), Path("o.so"), flags=C.VARIANTS["c256x2"])
    assert "-DTC_TILE_N=256" in cmd and "-DTC_CLUSTER_M=2" in cmd and "-Xptxas=-v" in cmd
    assert cmd[-1] == str(C.SOURCE) and cmd.index("-DTC_TILE_N=256") < cmd.index("-o")


def test_library_path_keys_on_variant_flags_and_source(monkeypatch, tmp_path):
    _fake_cutlass(tmp_path / "cutlass")
    monkeypatch.setattr(C, "find_nvcc", lambda: Path("/usr/bin/true"))
    monkeypatch.setattr(C, "find_cutlass", lambda: (tmp_path / "cutlass" / "include",
                                                    tmp_path / "cutlass" / "tools" / "util" / "include"))
    monkeypatch.delenv("TILECRAFT_QMATMUL_CUTLASS", raising=False)
    paths = {v: C.library_path(tmp_path, v) for v in C.VARIANTS}
    assert len(set(paths.values())) == len(C.VARIANTS)
    assert all(p.parent == tmp_path and p.name.startswith(f"tc_mixed_gemm-{v}-") for v, p in paths.items())
    assert C.library_path(tmp_path) == paths["c128"]
    monkeypatch.setenv("TILECRAFT_QMATMUL_CUTLASS", "pp")
    assert C.library_path(tmp_path) == paths["pp"]
    # the same name with other flags (or another source) is another library
    monkeypatch.setitem(C.VARIANTS, "pp", C.VARIANTS["pp"] + ["-DTC_CLUSTER_N=2"])
    assert C.library_path(tmp_path, "pp") != paths["pp"]
    src = tmp_path / "other.cu"
    src.write_text("// another source\n")
    monkeypatch.setattr(C, "SOURCE", src)
    assert C.library_path(tmp_path, "c128") != paths["c128"]


@pytest.mark.skipif(C.find_nvcc() is None, reason="needs nvcc")
def test_build_many_compiles_variants_concurrently(monkeypatch, tmp_path):
    """build_many with the real nvcc on a tiny source (SOURCE and VARIANTS monkeypatched): each variant's flags reach
    its own library, a failing variant is reported (not raised), a second call finds the cache."""
    _fake_cutlass(tmp_path / "cutlass")
    monkeypatch.setattr(C, "find_cutlass", lambda: (tmp_path / "cutlass" / "include",
                                                    tmp_path / "cutlass" / "tools" / "util" / "include"))
    src = tmp_path / "tiny.cu"
    src.write_text('#ifdef TC_FAIL\n#error "variant fails"\n#endif\n#ifndef TC_TILE_N\n#define TC_TILE_N 128\n#endif\n'
                   'extern "C" int tile_n() { return TC_TILE_N; }\n')
    monkeypatch.setattr(C, "SOURCE", src)
    monkeypatch.setattr(C, "VARIANTS", {"a": [], "b": ["-DTC_TILE_N=256"], "bad": ["-DTC_FAIL=1"]})
    res = C.build_many(["a", "b", "bad"], jobs=3, out_dir=tmp_path / "out")
    assert list(res) == ["a", "b", "bad"]
    assert res["bad"].path is None and "variant fails" in res["bad"].error
    for v, want in (("a", 128), ("b", 256)):
        assert res[v].error is None and res[v].path.is_file() and res[v].path.with_suffix(".log").is_file()
        assert ctypes.CDLL(str(res[v].path)).tile_n() == want
    again = C.build_many(["a", "b"], out_dir=tmp_path / "out")
    assert {v: r.path for v, r in again.items()} == {"a": res["a"].path, "b": res["b"].path}
    with pytest.raises(C.CutlassError, match="unknown variant"):
        C.build_many(["a", "nope"], out_dir=tmp_path / "out")


def test_ptxas_summary_picks_the_kernels():
    def kernel(name, regs, spill):
        return (f"ptxas info    : Function properties for {name}\n    0 bytes stack frame, {spill} bytes spill "
                f"stores, {spill} bytes spill loads\nptxas info    : Used {regs} registers, used 2 barriers\n")
    log = (kernel("_ZN7cutlass13device_kernelINS_4gemm6kernel13GemmUniversalIN4cuteNS_15integer_subbyteILi4ELb1EE",
                  168, 0) + kernel("_Z6helperv", 32, 8)
           + kernel("_ZN7cutlass13device_kernelINS_4gemm6kernel13GemmUniversalIN4cute5tupleIJaNS_10bfloat16_t", 90, 4))
    assert C.ptxas_summary(log) == {
        "int4_weight_only": "168 registers, 0 bytes spill stores, 0 bytes spill loads",
        "int8_weight_only": "90 registers, 4 bytes spill stores, 4 bytes spill loads"}


def test_mixed_gemm_refuses_a_variant_without_the_scheme():
    p = C.repack(quantize_weight(torch.randn(32, 128), "int4_weight_only", 64))
    with pytest.raises(C.CutlassError, match="variant 'i8epi' has no int4_weight_only kernel"):
        C.mixed_gemm("int4_weight_only", torch.randn(4, 128, dtype=torch.bfloat16), p, variant="i8epi")


def test_mixed_gemm_checks_the_residual_before_loading(monkeypatch):
    p = C.repack(quantize_weight(torch.randn(32, 128), "int8_weight_only"))
    x = torch.randn(4, 128, dtype=torch.bfloat16)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # (lookup only: no kernel runs)
    with pytest.raises(C.CutlassError, match="residual must be a contiguous bf16 \\[4, 32\\]"):
        C.mixed_gemm("int8_weight_only", x, p, residual=torch.zeros(4, 16, dtype=torch.bfloat16))


def test_status_messages():
    assert C.status_message(1000 + 4) == "CUTLASS status kErrorInvalidProblem"
    assert C.status_message(3001) == "workspace too small"
    assert C.status_message(3002) == "no kernel for this scheme in this variant"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine")
def test_bench_exits_2_without_cuda():
    r = subprocess.run([sys.executable, str(REPO / "bench" / "cutlass_mixed.py")], check=False,
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "needs a CUDA GPU" in r.stderr
