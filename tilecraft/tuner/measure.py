"""Measuring candidate configs: timed on the GPU, or simulated (with real interpreter correctness checks) on CPU.

Every measurer returns a `Measurement` per config and never raises for a bad candidate: a compile error, an
illegal config, out-of-resources, a wrong answer or a time-out is recorded as status "failed" with the reason.
"""
from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import pickle
import random
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .spaces import ConfigSpace, config_key, gemm_smem_bytes


@dataclass
class Measurement:
    """The result of measuring one config of one kernel."""

    config: dict
    status: str  # "ok" | "failed"
    time_ms: float | None = None
    error: str | None = None
    seconds: float = 0.0  # wall time spent on this measurement (compile + check + timing)
    timestamp: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Measurer(Protocol):
    def measure(self, kernel, config: dict) -> Measurement: ...


# Relative-to-max-norm tolerance per dtype for comparing a candidate's output with the default config's output.
# Different tilings change fp32 summation order; fp32 matmuls may run on tf32 (DESIGN.md: tf32 ~3e-4).
CHECK_TOLERANCE = {torch.float32: 3e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float64: 1e-7}


def compare_outputs(got: list[torch.Tensor], expected: list[torch.Tensor]) -> str | None:
    """None when every output matches; else a message naming the output and the error."""
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.shape != e.shape:
            return f"output {i}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        if not e.dtype.is_floating_point:
            if not torch.equal(g, e):
                return f"output {i}: integer/bool output differs in {(g != e).sum().item()} places"
            continue
        tol = CHECK_TOLERANCE.get(e.dtype, 1e-2)
        gf, ef = g.double(), e.double()
        if torch.isnan(gf).ne(torch.isnan(ef)).any():
            return f"output {i}: NaN pattern differs"
        gf, ef = torch.nan_to_num(gf), torch.nan_to_num(ef)
        scale = ef.abs().max().item() if ef.numel() else 0.0
        err = (gf - ef).abs().max().item() if ef.numel() else 0.0
        if err > tol * max(scale, 1.0):
            return f"output {i}: max abs error {err:.3g} > {tol} x max|ref| {scale:.3g}"
    return None


def _zero_outputs(kernel, args: list[torch.Tensor]) -> None:
    for p in kernel.out_positions:
        args[p].zero_()


def _outputs(kernel, args: list[torch.Tensor]) -> list[torch.Tensor]:
    return [args[p].clone() for p in kernel.out_positions]


def _failed(config: dict, err: BaseException | str, t0: float) -> Measurement:
    msg = err if isinstance(err, str) else f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return Measurement(dict(config), "failed", None, msg[:500], time.perf_counter() - t0)


class _RefCache:
    """Per-kernel arg sets and the default config's outputs (the correctness reference)."""

    def __init__(self):
        self._cache: dict[int, tuple] = {}

    def get(self, kernel, device, n_sets_fn: Callable[[list[torch.Tensor]], int]):
        hit = self._cache.get(id(kernel))
        if hit is not None and hit[0] is kernel:
            return hit[1], hit[2]
        first = kernel.make_args(device, 0)
        sets = [first] + [kernel.make_args(device, s) for s in range(1, n_sets_fn(first))]
        default = kernel.default_config()
        _zero_outputs(kernel, sets[0])
        try:
            kernel.launch(sets[0], default)
        except Exception as e:
            raise RuntimeError(f"the default config {default} of kernel {getattr(kernel, 'name', kernel.key)} "
                               f"failed, so there is no reference to check candidates against: {e}") from e
        ref = _outputs(kernel, sets[0])
        self._cache[id(kernel)] = (kernel, sets, ref)
        return sets, ref


class GPUMeasurer:
    """Times configs on a CUDA device: warm-up, then the median over repetitions of one round of launches that
    rotates over several arg sets (enough bytes to exceed 2x the L2 so it does not flatter small kernels),
    timed with CUDA events, the launches queued behind a GPU sleep (GPU time, not the host's launch cost). Each
    candidate's output is checked against the default config's output first.
    Runs in-process (try/except); wrap it in `SubprocessMeasurer` to survive hard crashes and hangs."""

    def __init__(self, device: str = "cuda", warmup_ms: float = 5.0, reps: int = 20, time_limit_s: float = 10.0,
                 max_arg_sets: int = 16, max_arg_bytes: int = 2 << 30, l2_bytes: int | None = None,
                 check: bool = True):
        self.device, self.warmup_ms, self.reps, self.time_limit_s = device, warmup_ms, reps, time_limit_s
        self.max_arg_sets, self.max_arg_bytes, self.check = max_arg_sets, max_arg_bytes, check
        if l2_bytes is None:
            p = torch.cuda.get_device_properties(torch.device(device))
            l2_bytes = getattr(p, "L2_cache_size", 50 << 20)
        self.l2_bytes = l2_bytes
        self._refs = _RefCache()

    def _n_sets(self, args: list[torch.Tensor]) -> int:
        nbytes = max(1, sum(a.numel() * a.element_size() for a in args))
        want = math.ceil(2 * self.l2_bytes / nbytes)
        return int(max(1, min(self.max_arg_sets, want, self.max_arg_bytes // nbytes)))

    def measure(self, kernel, config: dict) -> Measurement:
        t0 = time.perf_counter()
        try:
            sets, ref = self._refs.get(kernel, self.device, self._n_sets)
            _zero_outputs(kernel, sets[0])
            kernel.launch(sets[0], config)  # compiles
            torch.cuda.synchronize(self.device)
            if time.perf_counter() - t0 > self.time_limit_s:
                return _failed(config, f"time limit: first launch took {time.perf_counter() - t0:.1f}s "
                                       f"> {self.time_limit_s}s", t0)
            if self.check:
                bad = compare_outputs(_outputs(kernel, sets[0]), ref)
                if bad:
                    return _failed(config, f"wrong result vs default config: {bad}", t0)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sleep = 0  # GPU clock cycles to keep the device busy while a round's launches queue

            def round_ms() -> float:
                nonlocal sleep
                if sleep:
                    torch.cuda._sleep(sleep)
                start.record()
                h0 = time.perf_counter()
                for s in sets:
                    kernel.launch(s, config)
                host_s = time.perf_counter() - h0
                end.record()
                end.synchronize()
                # a kernel shorter than its launch's host cost (decode-sized GEMMs: ~5 us of GPU, ~10-20 us of
                # Python per launch) would be timed as host time: from the next round on, the launches queue
                # behind a GPU sleep that outlasts them (~2 GHz clock; longer at lower clocks: still outside)
                sleep = max(sleep, int(1.5 * host_s * 2e9) + 20_000)
                return start.elapsed_time(end) / len(sets)

            est = round_ms()
            est = round_ms()  # (the first round ran without the sleep)
            per_round = est * len(sets)
            for _ in range(max(1, int(self.warmup_ms / max(per_round, 1e-3)))):
                est = round_ms()
            budget_ms = max(0.0, self.time_limit_s - (time.perf_counter() - t0)) * 1000 * 0.8
            reps = int(max(3, min(self.reps, budget_ms / max(per_round, 1e-3))))
            times = [round_ms() for _ in range(reps)]
            return Measurement(dict(config), "ok", statistics.median(times), None, time.perf_counter() - t0)
        except Exception as e:  # compile error, out of resources, illegal config: recorded, never retried
            return _failed(config, e, t0)


# ----------------------------------------------------------------------------------------------------------
# Hard-crash isolation: the measurer runs in a spawned worker; a crash or hang costs only that candidate.

def _worker(conn, factory, kwargs) -> None:  # pragma: no cover - runs in the child
    measurer = factory(**kwargs)
    kernels: dict[str, object] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg[0] == "kernel":
            kernels[msg[1]] = pickle.loads(msg[2])
        elif msg[0] == "measure":
            try:
                m = measurer.measure(kernels[msg[1]], msg[2])
            except BaseException as e:
                m = Measurement(dict(msg[2]), "failed", None, f"{type(e).__name__}: {e}"[:500])
            conn.send(m)
        else:
            return


class SubprocessMeasurer:
    """Runs another measurer in a spawned worker process; a candidate that kills the process (segfault, CUDA
    context lost) or hangs past `timeout_s` is recorded as failed and the worker is restarted.
    The kernel must pickle (e.g. `ReferenceGemm`)."""

    def __init__(self, factory: Callable[..., Measurer] = GPUMeasurer, timeout_s: float = 60.0, **kwargs):
        self.factory, self.kwargs, self.timeout_s = factory, kwargs, timeout_s
        self._proc = self._conn = None
        self._sent: set[str] = set()

    def _start(self):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, self.factory, self.kwargs), daemon=True)
        self._proc.start()
        self._sent = set()

    def close(self):
        if self._proc is not None:
            try:
                self._conn.send(("stop",))
            except Exception:
                pass
            self._proc.join(2)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None

    def measure(self, kernel, config: dict) -> Measurement:
        t0 = time.perf_counter()
        if self._proc is None or not self._proc.is_alive():
            self._start()
        kid = f"{kernel.key}:{id(kernel)}"
        try:
            if kid not in self._sent:
                try:
                    blob = pickle.dumps(kernel)
                except Exception as e:
                    raise TypeError(f"SubprocessMeasurer needs a picklable kernel; {type(kernel).__name__} is not "
                                    f"({e}); use GPUMeasurer in-process instead") from e
                self._conn.send(("kernel", kid, blob))
                self._sent.add(kid)
            self._conn.send(("measure", kid, config))
            if not self._conn.poll(self.timeout_s):
                self._proc.kill()
                self._proc = None
                return _failed(config, f"time limit: no result within {self.timeout_s}s (worker killed)", t0)
            return self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            code = self._proc.exitcode if self._proc is not None else None
            self._proc = None
            return _failed(config, f"worker process died (exit code {code})", t0)


# ----------------------------------------------------------------------------------------------------------
# CPU: a deterministic synthetic cost surface (to test search logic) + real interpreter correctness runs.

class SyntheticSurface:
    """A deterministic cost over a space's configs: each knob has a hidden preferred value (cost grows with the
    distance in candidate-index steps), one pair of knobs interacts, a little hash noise, and ~2% of configs
    "fail" (as out-of-resources would). Its structure is learnable from the knob features, like real surfaces."""

    def __init__(self, space: ConfigSpace, seed: int = 0, fail_rate: float = 0.02, base_ms: float = 1.0,
                 never_fail: list[dict] | None = None):
        rng = random.Random(f"synthetic-surface-{seed}")  # not the searcher's stream
        self.space, self.seed, self.fail_rate, self.base_ms = space, seed, fail_rate, base_ms
        self.never_fail = {config_key(c) for c in never_fail or []}  # e.g. a kernel's default config
        self.pref = {k: rng.randrange(len(v)) for k, v in space.knobs.items()}
        self.weight = {k: rng.uniform(0.1, 0.6) for k in space.knobs}
        multi = [k for k, v in space.knobs.items() if len(v) > 1]
        self.pair = tuple(rng.sample(multi, 2)) if len(multi) >= 2 else None

    def _hash01(self, config: dict, salt: str) -> float:
        h = hashlib.sha256(f"{self.seed}:{salt}:{config_key(config)}".encode()).digest()
        return int.from_bytes(h[:8], "little") / 2 ** 64

    def fails(self, config: dict) -> bool:
        return config_key(config) not in self.never_fail and self._hash01(config, "fail") < self.fail_rate

    def time_ms(self, config: dict) -> float:
        cost = 1.0
        d = {}
        for k, vals in self.space.knobs.items():
            v = config.get(k)  # (a default config may leave a knob out: the kernel's own default)
            d[k] = (vals.index(v) if v in vals else 0) - self.pref[k]
            cost *= 1.0 + self.weight[k] * abs(d[k]) ** 1.3
        if self.pair:
            a, b = self.pair
            cost *= 1.0 + 0.3 * abs(d[a] - d[b])
        return self.base_ms * cost * (1.0 + 0.03 * self._hash01(config, "noise"))

    def optimum(self) -> tuple[dict, float]:
        """The best non-failing valid config and its time (by enumeration)."""
        best = min((c for c in self.space.enumerate() if not self.fails(c)), key=self.time_ms)
        return best, self.time_ms(best)


def roofline_gemm_ms(shapes: dict, config: dict, device, itemsize: int = 2) -> float:
    """A deterministic, physically-shaped GEMM time (for tests of cost models across shapes): waves of tiles
    over the SMs, each tile bound by its MMA time (efficiency from warps/stages/tile size) or its operand
    traffic, plus the split-K reduction pass. A config whose shared memory exceeds the device's limit raises
    (as the real launch does: out of resources), so a simulated search never picks a config that cannot run."""
    M, N, K = shapes["M"], shapes["N"], shapes["K"]
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    split, warps, stages = config.get("SPLIT_K", 1), config["num_warps"], config["num_stages"]
    smem = gemm_smem_bytes(config, itemsize)
    if smem > device.smem_per_block:
        raise RuntimeError(f"out of resources: shared memory {smem} B > {device.smem_per_block} B")
    per_sm = max(1, min(device.smem_per_block // smem, device.max_threads_per_sm // (32 * warps), 4))
    tiles = math.ceil(M / bm) * math.ceil(N / bn) * split
    waves = math.ceil(tiles / (device.sm_count * per_sm))
    k_iters = math.ceil(K / (bk * split))
    eff = min(1.0, (bm * bn) / (128 * 128)) ** 0.5 * {2: 0.7, 3: 0.9, 4: 1.0, 5: 0.97}.get(stages, 0.8)
    eff *= {2: 0.75, 4: 1.0, 8: 0.95 if bm * bn >= 128 * 128 else 0.8}.get(warps, 0.8)
    peak_sm = device.peak_tflops * 1e12 / device.sm_count / per_sm
    t_mma = 2 * bm * bn * bk / (peak_sm * max(eff, 0.05))
    t_mem = (bm * bk + bk * bn) * itemsize / (device.bandwidth_gbps * 1e9 / device.sm_count * 4 / per_sm)
    t = waves * k_iters * max(t_mma, t_mem) + 3e-6
    if split > 1:
        t += 2 * split * M * N * 4 / (device.bandwidth_gbps * 1e9)
    return t * 1e3


def simulated_measurer_factory(kernel, space: ConfigSpace) -> "SimulatedMeasurer":
    """`tilecraft tune --simulate` (and the no-GPU default): a synthetic surface per kernel (seeded by its key;
    its default config never "fails", as on hardware the default always runs) with every candidate really
    launched and checked against the default config's output."""
    surface = SyntheticSurface(space, seed=int(kernel.key[:8], 16), never_fail=[kernel.default_config()])
    return SimulatedMeasurer(surface, run_kernels=True)


class SimulatedMeasurer:
    """Times come from a cost function (a `SyntheticSurface` or any config -> ms); with `run_kernels` each
    candidate is really launched (through the Triton interpreter on CPU) and checked against the default
    config's output, so wrong or crashing configs are still caught. For testing search logic without a GPU."""

    def __init__(self, surface: Callable[[dict], float] | SyntheticSurface | None = None, run_kernels: bool = False,
                 device: str = "cpu"):
        self.surface, self.run_kernels, self.device = surface, run_kernels, device
        self._refs = _RefCache()

    def _time(self, config: dict) -> float:
        if isinstance(self.surface, SyntheticSurface):
            if self.surface.fails(config):
                raise RuntimeError("simulated out of resources")
            return self.surface.time_ms(config)
        if self.surface is None:
            return _default_surface_ms(config)
        return float(self.surface(config))

    def measure(self, kernel, config: dict) -> Measurement:
        t0 = time.perf_counter()
        try:
            if self.run_kernels:
                sets, ref = self._refs.get(kernel, self.device, lambda a: 1)
                _zero_outputs(kernel, sets[0])
                kernel.launch(sets[0], config)
                bad = compare_outputs(_outputs(kernel, sets[0]), ref)
                if bad:
                    return _failed(config, f"wrong result vs default config: {bad}", t0)
            return Measurement(dict(config), "ok", self._time(config), None, time.perf_counter() - t0)
        except Exception as e:
            return _failed(config, e, t0)


def _default_surface_ms(config: dict) -> float:
    """A fixed, config-only cost used when no surface is given (stable across runs)."""
    h = hashlib.sha256(config_key(config).encode()).digest()
    return 0.5 + int.from_bytes(h[:8], "little") / 2 ** 64


class ReplayMeasurer:
    """Replays a table of earlier measurements (config key -> Measurement): search strategies can be compared
    on the same exhaustive table without measuring any config twice (bench/tune_gemm.py)."""

    def __init__(self, table: dict[str, Measurement]):
        self.table = table

    def measure(self, kernel, config: dict) -> Measurement:
        m = self.table.get(config_key(config))
        if m is None:
            return Measurement(dict(config), "failed", None, "config not in the replay table")
        return Measurement(dict(config), m.status, m.time_ms, m.error, 0.0)


def format_error(e: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(e), e)).strip()
