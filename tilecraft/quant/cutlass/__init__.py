"""CUTLASS 3.x Hopper (sm_90a) mixed-input GEMM for quantized prefill: out = x @ dequant(W).t() without a bf16
copy of the weight. `mixed_gemm.cu` beside this file is compiled once with nvcc into a small shared library
(plain C ABI) that is loaded with ctypes; see that file for the kernel's recipe (CUTLASS example 55).

* `VARIANTS` names kernel configurations (preprocessor flags of the .cu: tile, cluster, schedule, int8 scale in
  the epilogue); `build(out_dir, variant=...)` compiles one (cached by a hash of source, flags and CUTLASS version
  under `cache_root()/cutlass`), `build_many(variants, jobs)` several at once. The default variant is the one
  $TILECRAFT_QMATMUL_CUTLASS names, else the scheme's measured best (SCHEME_VARIANTS), else "c128".
  `available()` says whether the kernels can be used here (an sm_90 device, nvcc and the CUTLASS headers), never
  raising.
* `repack(qw)` / `repack_int4` / `repack_int8` convert tilecraft's formats (tilecraft/quant/formats.py) to the
  layout the kernel reads, once at load time; `dequantize_packed` is the pure-torch statement of what the
  kernel computes from that layout.
* `mixed_gemm(scheme, x2d, packed, out=None, residual=None, variant=None)` runs it on torch tensors on the current
  stream: out = x2d @ W.t() (+ residual, fused into the epilogue; residual may be out itself).

Repacked layouts ([N, K] weights, K the reduction):

* int8_weight_only: qweight int8 [N, K] as is; scales bf16 [N]; w = bf16(q * s).
* int4_weight_only: codes q (0..15) become signed int4 v = q - 8 (the nibble q ^ 8), laid out in CUTLASS's
  reordered order (`reorder_int4`: 16 x 16 atoms, each thread's 8 wgmma values contiguous, values within a thread
  in the order [0,2,4,6,1,3,5,7]; atoms N-fastest), two per byte, the first in the low nibble: uint8 [N * K / 2].
  scales bf16 [K/G, N] (N fastest) and zeros bf16 [K/G, N] holding (8 - z) * s, so that
  w = bf16(v * s + zero) = (q - z) * s. Group sizes that are a multiple of the tile's K (64) or equal to K.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("tilecraft")
SOURCE = Path(__file__).with_name("mixed_gemm.cu")
TILE_K = 64  # the kernels' k-block: int4 group sizes must be a multiple of it (or equal K)
SCHEME_IDS = {"int4_weight_only": 4, "int8_weight_only": 8}
CUTLASS_STATUS = ("kSuccess", "kErrorMisalignedOperand", "kErrorInvalidDataType", "kErrorInvalidLayout",
                  "kErrorInvalidProblem", "kErrorNotSupported", "kErrorWorkspaceNull", "kErrorInternal",
                  "kErrorArchMismatch", "kErrorInsufficientDriver", "kErrorMemoryAllocation", "kInvalid")


# name -> nvcc -D flags (mixed_gemm.cu documents them); sizes are of the swapped problem: M = weight rows,
# N = activation rows. Every variant of a scheme reads the same repacked layout.
_NO_INT4 = ["-DTC_WITH_INT4=0"]
VARIANTS: dict[str, list[str]] = {
    "c128": [],  # cooperative, 128 x 128 x 64 tile, no cluster
    "c256": ["-DTC_TILE_N=256"],  # 128 x 256 x 64
    "c128x2": ["-DTC_CLUSTER_M=2"],  # 2 x 1 cluster: the activation tile multicast to two weight-row tiles
    "c256x2": ["-DTC_TILE_N=256", "-DTC_CLUSTER_M=2"],
    "pp": ["-DTC_SCHEDULE=TC_PINGPONG", "-DTC_TILE_M=64"],  # ping-pong, 64 x 128 x 64 per warpgroup
    "i8k128": ["-DTC_TILE_K=128"] + _NO_INT4,  # int8 only: 128 x 128 x 128
    "i8epi": ["-DTC_INT8_EPILOGUE_SCALE=1"] + _NO_INT4,  # int8 only: exact convert, per-row scale in the epilogue
    "i8epi256": ["-DTC_INT8_EPILOGUE_SCALE=1", "-DTC_TILE_N=256"] + _NO_INT4,
}
DEFAULT_VARIANT = "c128"


class CutlassError(RuntimeError):
    """The CUTLASS mixed-input GEMM cannot be built, loaded or run; the message says why."""


# ------------------------------------------------------------------------------------------------ build
def find_nvcc() -> Path | None:
    """nvcc from $CUDA_HOME/bin (or $CUDA_PATH/bin), else PATH, else /usr/local/cuda/bin."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            p = Path(os.environ[var]) / "bin" / "nvcc"
            if p.is_file():
                return p
    found = shutil.which("nvcc")
    if found:
        return Path(found)
    p = Path("/usr/local/cuda/bin/nvcc")
    return p if p.is_file() else None


def _cutlass_root_ok(root: Path) -> bool:
    return (root / "include" / "cutlass" / "cutlass.h").is_file() and \
        (root / "tools" / "util" / "include" / "cutlass" / "util" / "packed_stride.hpp").is_file()


def find_cutlass() -> tuple[Path, Path] | None:
    """(include dir, tools/util/include dir) of CUTLASS: $TILECRAFT_CUTLASS_DIR (a CUTLASS checkout, or the
    `source` folder of the nvidia-cutlass wheel), else the `cutlass_library` package's bundled source (the
    nvidia-cutlass wheel; also found when installed with `pip install --target DIR` and DIR on PYTHONPATH)."""
    roots = []
    if os.environ.get("TILECRAFT_CUTLASS_DIR"):
        d = Path(os.environ["TILECRAFT_CUTLASS_DIR"])
        roots += [d, d / "source", d / "cutlass_library" / "source"]
    else:
        try:
            spec = importlib.util.find_spec("cutlass_library")  # does not import (run) the package
        except (ImportError, ValueError):
            spec = None
        for loc in (spec.submodule_search_locations or []) if spec else []:
            roots.append(Path(loc) / "source")
    for root in roots:
        if _cutlass_root_ok(root):
            return root / "include", root / "tools" / "util" / "include"
    return None


# each scheme's fastest variant on an H200 at M=2048 over LLaMA-492M's weights (bench/cutlass_mixed.py,
# bench/results/h200-2026-12-03e call 5: geomean time / cuBLAS bf16 1.106 for int8, 1.076 for int4)
SCHEME_VARIANTS = {"int8_weight_only": "i8epi256", "int4_weight_only": "c256x2"}


def default_variant(scheme: str | None = None) -> str:
    """$TILECRAFT_QMATMUL_CUTLASS when it names a variant, else the scheme's SCHEME_VARIANTS entry, else
    DEFAULT_VARIANT."""
    env = os.environ.get("TILECRAFT_QMATMUL_CUTLASS", "").strip()
    return env if env in VARIANTS else SCHEME_VARIANTS.get(scheme, DEFAULT_VARIANT)


def variant_flags(variant: str | None = None) -> list[str]:
    variant = variant or default_variant()
    if variant not in VARIANTS:
        raise CutlassError(f"CUTLASS mixed GEMM: unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return list(VARIANTS[variant])


def variant_schemes(variant: str | None = None) -> tuple[str, ...]:
    """The schemes a variant has kernels for (TC_WITH_INT4=0 / TC_WITH_INT8=0 leave one out)."""
    flags = variant_flags(variant)
    ids = {"int4_weight_only": "-DTC_WITH_INT4=0", "int8_weight_only": "-DTC_WITH_INT8=0"}
    return tuple(s for s in SCHEME_IDS if ids[s] not in flags)


def nvcc_command(nvcc: Path, includes: tuple[Path, Path], out: Path, source: Path | None = None,
                 flags: list[str] | tuple[str, ...] = ()) -> list[str]:
    source = source or SOURCE
    return [str(nvcc), "-std=c++17", "-O3", "-arch=sm_90a", "--expt-relaxed-constexpr", "-DNDEBUG", "-Xptxas=-v",
            *flags, f"-I{includes[0]}", f"-I{includes[1]}", "-shared", "-Xcompiler", "-fPIC", "-o", str(out),
            str(source)]


def _tools() -> tuple[Path, tuple[Path, Path]]:
    nvcc = find_nvcc()
    if nvcc is None:
        raise CutlassError("CUTLASS mixed GEMM: nvcc not found (looked in $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, "
                           "/usr/local/cuda/bin); install the CUDA toolkit or set CUDA_HOME")
    includes = find_cutlass()
    if includes is None:
        raise CutlassError("CUTLASS mixed GEMM: CUTLASS headers not found; `pip install --no-deps nvidia-cutlass` "
                           "(its cutlass_library/source holds them) or set TILECRAFT_CUTLASS_DIR to a CUTLASS checkout")
    return nvcc, includes


def library_path(out_dir: str | os.PathLike | None = None, variant: str | None = None) -> Path:
    """Where `build` puts (or finds) a variant's library: named by the variant and a hash of the source, the
    flags and the CUTLASS version header, so an edit to any of them builds a new one."""
    variant = variant or default_variant()
    flags = variant_flags(variant)
    _, includes = _tools()
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(" ".join(nvcc_command(Path("nvcc"), includes, Path("x"), flags=flags)).encode())
    h.update((includes[0] / "cutlass" / "version.h").read_bytes() if (includes[0] / "cutlass" / "version.h").is_file()
             else b"")
    if out_dir is None:
        from tilecraft.codegen.kernel import cache_root
        out_dir = cache_root() / "cutlass"
    return Path(out_dir) / f"tc_mixed_gemm-{variant}-{h.hexdigest()[:16]}.so"


def ptxas_summary(log: str) -> dict[str, str]:
    """From nvcc's ptxas -v output: per GEMM kernel (by scheme) its registers and spills, e.g.
    {"int4_weight_only": "168 registers, 0 bytes spill stores, 0 bytes spill loads"}."""
    out, kernel = {}, None
    for ln in log.splitlines():
        if "Function properties for " in ln:
            name = ln.split("Function properties for ")[-1]
            kernel = None if "GemmUniversal" not in name else \
                "int4_weight_only" if "integer_subbyteILi4ELb1" in name else "int8_weight_only"
        elif kernel and "spill stores" in ln:
            spills = ", ".join(p.strip() for p in ln.split(",")[1:])
        elif kernel and "Used" in ln and "registers" in ln:
            out[kernel] = f"{ln.split('Used ')[1].split(' registers')[0]} registers, {spills}"
            kernel = None
    return out


def build(out_dir: str | os.PathLike | None = None, verbose: bool = False, variant: str | None = None) -> Path:
    """Compile mixed_gemm.cu with a variant's flags into a shared library (minutes; cached) and return its path.
    nvcc's output (ptxas -v: registers and spills) is kept beside it as <library>.log."""
    nvcc, includes = _tools()
    variant = variant or default_variant()
    so = library_path(out_dir, variant)
    if so.is_file():
        return so
    so.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=so.stem + ".", suffix=".tmp.so", dir=so.parent)
    os.close(fd)
    cmd = nvcc_command(nvcc, includes, Path(tmp), flags=variant_flags(variant))
    log.warning("tilecraft: building the CUTLASS mixed-input GEMM (%s) with nvcc: once per machine, about 2 "
                "minutes; cached as %s", variant, so)
    if verbose:
        print(" ".join(cmd), flush=True)
    t0 = time.time()
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if r.returncode != 0:
            raise CutlassError(f"CUTLASS mixed GEMM ({variant}): nvcc failed (exit {r.returncode}) after "
                               f"{time.time() - t0:.0f}s:\n{' '.join(cmd)}\n{(r.stdout + r.stderr)[-6000:]}")
        so.with_suffix(".log").write_text(r.stdout + r.stderr)
        os.chmod(tmp, 0o755)
        os.replace(tmp, so)  # atomic: concurrent builders each write their own temp file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if verbose:
        print(f"built {so} in {time.time() - t0:.1f}s", flush=True)
    return so


@dataclass
class BuildResult:
    variant: str
    path: Path | None  # None when the build failed
    seconds: float  # ~0 when it was cached
    error: str | None = None


def build_many(variants=None, jobs: int | None = None, out_dir: str | os.PathLike | None = None,
               verbose: bool = False) -> dict[str, BuildResult]:
    """Build several variants (default: all of VARIANTS) with up to `jobs` (default: CPU count) nvcc processes at
    once; a failure is reported in its BuildResult, not raised."""
    names = list(VARIANTS if variants is None else variants)
    for v in names:
        variant_flags(v)  # unknown names fail before anything is compiled

    def one(v: str) -> BuildResult:
        t0 = time.time()
        try:
            return BuildResult(v, build(out_dir, verbose, v), time.time() - t0)
        except CutlassError as e:
            return BuildResult(v, None, time.time() - t0, str(e))

    with ThreadPoolExecutor(max_workers=max(1, min(len(names), jobs or os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(one, names)))


def available() -> bool:
    """Whether the kernel can be used here: a CUDA device of capability (9, 0), nvcc and the CUTLASS headers."""
    try:
        if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
            return False
        return find_nvcc() is not None and find_cutlass() is not None
    except Exception:  # noqa: BLE001  (a broken CUDA setup means "not available", never an exception)
        return False


# ------------------------------------------------------------------------------------------------ load
_LIBS: dict[str, ctypes.CDLL] = {}


def load(variant: str | None = None, path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """A variant's loaded library (from `path`, else built first when it is not in the cache)."""
    variant = variant or default_variant()
    variant_flags(variant)
    if variant in _LIBS and path is None:
        return _LIBS[variant]
    lib = ctypes.CDLL(str(path or build(variant=variant)))
    vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.tc_mixed_gemm_compiled_sm90.restype = i
    lib.tc_mixed_gemm_workspace.argtypes = [i, i, i, i, i]
    lib.tc_mixed_gemm_workspace.restype = sz
    lib.tc_mixed_gemm_int4_bf16.argtypes = [vp, vp, vp, vp, vp, vp, i, i, i, i, vp, vp, sz]
    lib.tc_mixed_gemm_int4_bf16.restype = i
    lib.tc_mixed_gemm_int8_bf16.argtypes = [vp, vp, vp, vp, vp, i, i, i, vp, vp, sz]
    lib.tc_mixed_gemm_int8_bf16.restype = i
    if not lib.tc_mixed_gemm_compiled_sm90():
        raise CutlassError(f"CUTLASS mixed GEMM: {path or 'the library'} was built without sm_90 kernels "
                           f"(nvcc older than 12.0?)")
    _LIBS[variant] = lib
    return lib


def status_message(rc: int) -> str:
    if 1000 <= rc < 2000:
        s = rc - 1000
        return f"CUTLASS status {CUTLASS_STATUS[s] if s < len(CUTLASS_STATUS) else s}"
    if 2000 <= rc < 3000:
        return f"CUDA error {rc - 2000}"
    return {3000: "bad arguments", 3001: "workspace too small",
            3002: "no kernel for this scheme in this variant"}.get(rc, f"code {rc}")


# ------------------------------------------------------------------------------------------------ repack
@dataclass
class PackedWeight:
    """A weight in the kernel's layout (see the module doc)."""

    scheme: str
    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    group: int  # int4: group size along K; int8: 0 (one scale per row)
    shape: tuple[int, int]  # (N, K)


def fits(n: int, k: int, group: int = 0) -> bool:
    """Can the kernels take an [n, k] weight (int4: in groups of `group`)? 16-row atoms, TILE_K-long k-blocks, and
    int4 groups of whole k-blocks (or one group)."""
    return not (n % 16 or k % TILE_K or (group and group != k and group % TILE_K))


def _check_nk(n: int, k: int, what: str) -> None:
    if not fits(n, k):
        raise CutlassError(f"CUTLASS mixed GEMM ({what}): needs N % 16 == 0 and K % {TILE_K} == 0, got N={n}, K={k}")


def reorder_int4(v: torch.Tensor) -> torch.Tensor:
    """[N, K] values → flat [N * K] in CUTLASS's reordered order for a bf16 RS wgmma with the [0,2,4,6,1,3,5,7]
    value shuffle: compute_memory_reordering_atom<bf16, Layout<(1,1)>, Layout<(2,4):(4,1)>> tiled to (N, K, 1)
    is the layout ((8,2),(2,4,2)):((32,1),(4,8,2)) on each 16 x 16 atom, atoms N-fastest (stride 256), so with
    n = n0 + 8 n1 + 16 tn and k = k0 + 2 k1 + 8 k2 + 16 tk, offset = 32 n0 + n1 + 4 k0 + 8 k1 + 2 k2 + 256 tn
    + 256 (N / 16) tk."""
    n, k = v.shape
    t = v.reshape(n // 16, 2, 8, k // 16, 2, 4, 2)  # tn, n1, n0, tk, k2, k1, k0
    return t.permute(3, 0, 2, 5, 6, 4, 1).reshape(-1)  # slowest → fastest: tk, tn, n0, k1, k0, k2, n1


def unreorder_int4(flat: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of reorder_int4."""
    t = flat.reshape(k // 16, n // 16, 8, 4, 2, 2, 2)  # tk, tn, n0, k1, k0, k2, n1
    return t.permute(1, 6, 2, 0, 5, 3, 4).reshape(n, k)  # tn, n1, n0, tk, k2, k1, k0


def repack_int4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group: int) -> PackedWeight:
    """tilecraft int4_weight_only (uint8 [N, K//2], scales [N, K//G], zeros uint8 [N, K//G]) → kernel layout."""
    from tilecraft.quant.formats import unpack_int4
    n, k = qweight.shape[0], qweight.shape[1] * 2
    _check_nk(n, k, "int4")
    if not fits(n, k, group):
        raise CutlassError(f"CUTLASS mixed GEMM (int4): group size {group} must be a multiple of {TILE_K} or equal "
                           f"K={k} (the kernel's k-block is {TILE_K})")
    if tuple(scales.shape) != (n, k // group) or tuple(zeros.shape) != (n, k // group):
        raise CutlassError(f"CUTLASS mixed GEMM (int4): scales/zeros must be [N, K//G] = [{n}, {k // group}], got "
                           f"{list(scales.shape)} and {list(zeros.shape)}")
    nib = reorder_int4(unpack_int4(qweight) ^ 8)  # the signed int4 code q - 8 as its two's-complement nibble
    packed = (nib[0::2] | (nib[1::2] << 4)).contiguous()
    s = scales.float().to(torch.bfloat16)
    zero = ((8.0 - zeros.float()) * s.float()).to(torch.bfloat16)
    return PackedWeight("int4_weight_only", packed, s.t().contiguous(), zero.t().contiguous(), group, (n, k))


def repack_int8(qweight: torch.Tensor, scales: torch.Tensor) -> PackedWeight:
    """tilecraft int8_weight_only (int8 [N, K], scales [N]) → kernel layout (weight as is, bf16 scales)."""
    n, k = qweight.shape
    if qweight.dtype != torch.int8:
        raise CutlassError(f"CUTLASS mixed GEMM (int8): qweight must be int8, got {qweight.dtype}")
    _check_nk(n, k, "int8")
    return PackedWeight("int8_weight_only", qweight.contiguous(), scales.float().to(torch.bfloat16).contiguous(),
                        None, 0, (n, k))


def repack(qw) -> PackedWeight:
    """A tilecraft QuantizedWeight (int8_weight_only or int4_weight_only) → kernel layout."""
    if qw.scheme == "int4_weight_only":
        return repack_int4(qw.qweight, qw.scales, qw.zeros, qw.group_size)
    if qw.scheme == "int8_weight_only":
        return repack_int8(qw.qweight, qw.scales)
    raise CutlassError(f"CUTLASS mixed GEMM: no kernel for scheme {qw.scheme!r}; has {tuple(SCHEME_IDS)}")


def dequantize_packed(p: PackedWeight) -> torch.Tensor:
    """The bf16 [N, K] weight the kernel multiplies by, computed from the packed layout (pure torch)."""
    n, k = p.shape
    if p.scheme == "int8_weight_only":
        return (p.qweight.float() * p.scales.float()[:, None]).to(torch.bfloat16)
    nib = torch.stack([p.qweight & 0xF, p.qweight >> 4], dim=1).reshape(-1)
    v = unreorder_int4(nib, n, k).to(torch.int16)
    v = torch.where(v >= 8, v - 16, v).float()  # two's-complement nibble → -8..7
    s = p.scales.float().t().repeat_interleave(p.group, dim=1)  # [N, K]
    z = p.zeros.float().t().repeat_interleave(p.group, dim=1)
    return (v * s + z).to(torch.bfloat16)


# ------------------------------------------------------------------------------------------------ run
def mixed_gemm(scheme: str, x2d: torch.Tensor, packed: PackedWeight, out: torch.Tensor | None = None,
               residual: torch.Tensor | None = None, variant: str | None = None) -> torch.Tensor:
    """out[M, N] (bf16) = x2d[M, K] (bf16) @ dequantize(W).t() (+ residual[M, N], added in the epilogue; it may be
    `out` itself) with W repacked by `repack*`, by the kernel of `variant` (default: default_variant(scheme))."""
    if scheme != packed.scheme:
        raise CutlassError(f"CUTLASS mixed GEMM: scheme {scheme!r} but the weight was packed for {packed.scheme!r}")
    variant = variant or default_variant(scheme)
    if scheme not in variant_schemes(variant):
        raise CutlassError(f"CUTLASS mixed GEMM: variant {variant!r} has no {scheme} kernel")
    n, k = packed.shape
    if x2d.dim() != 2 or x2d.dtype != torch.bfloat16 or not x2d.is_cuda or x2d.shape[1] != k:
        raise CutlassError(f"CUTLASS mixed GEMM: x must be a CUDA bf16 [M, {k}] tensor, got {x2d.dtype} "
                           f"{list(x2d.shape)} on {x2d.device}")
    x2d = x2d.contiguous()
    m = x2d.shape[0]
    for name, t in (("out", out), ("residual", residual)):
        if t is not None and (t.shape != (m, n) or t.dtype != torch.bfloat16 or not t.is_contiguous()
                              or t.device != x2d.device):
            raise CutlassError(f"CUTLASS mixed GEMM: {name} must be a contiguous bf16 [{m}, {n}] tensor on "
                               f"{x2d.device}")
    if out is None:
        out = torch.empty(m, n, dtype=torch.bfloat16, device=x2d.device)
    res_ptr = None if residual is None else residual.data_ptr()
    lib = load(variant)
    with torch.cuda.device(x2d.device):  # (our library's own CUDA runtime sees the current device and stream)
        ws_bytes = lib.tc_mixed_gemm_workspace(SCHEME_IDS[scheme], m, n, k, packed.group)
        ws = torch.empty(max(ws_bytes, 1), dtype=torch.uint8, device=x2d.device)
        stream = ctypes.c_void_p(torch.cuda.current_stream(x2d.device).cuda_stream)
        if scheme == "int4_weight_only":
            rc = lib.tc_mixed_gemm_int4_bf16(x2d.data_ptr(), packed.qweight.data_ptr(), packed.scales.data_ptr(),
                                             packed.zeros.data_ptr(), out.data_ptr(), res_ptr, m, n, k, packed.group,
                                             stream, ws.data_ptr(), ws_bytes)
        else:
            rc = lib.tc_mixed_gemm_int8_bf16(x2d.data_ptr(), packed.qweight.data_ptr(), packed.scales.data_ptr(),
                                             out.data_ptr(), res_ptr, m, n, k, stream, ws.data_ptr(), ws_bytes)
    if rc:
        raise CutlassError(f"CUTLASS mixed GEMM ({scheme}, {variant}, M={m} N={n} K={k} group={packed.group}) "
                           f"failed: {status_message(rc)}")
    return out
