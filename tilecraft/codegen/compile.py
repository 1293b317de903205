"""Compile a program's distinct kernels concurrently, before its first launch (as Inductor's async compile does).

Kernels are grouped into compile jobs by what Triton compiles: the source, the launch config and the argument
dtypes. Identical transformer layers give identical sources (see `kernel_name`), so a 12-layer model compiles
each layer's kernels once. Each job runs `JITFunction.warmup` in a thread pool with the exact constexprs and
launch options the first launch passes (and 16-byte-aligned pointers, as fresh allocations are), so that launch
finds the compiled kernel in Triton's in-memory cache. Threads overlap well: Triton's MLIR passes release the
GIL and ptxas is a subprocess. A job that fails in Triton's compiler becomes its kernels' torch fallback,
like a failed launch; any other failure leaves the kernel to compile at its first launch.

Environment: TILECRAFT_COMPILE_THREADS (default: the CPU count, at most 32; 1 compiles in order),
TILECRAFT_PROGRESS (unset: a progress bar on a terminal when compiling takes over 2 s or many kernels; 0: never;
1: always). On the CPU interpreter nothing is compiled and `compile_kernels` does nothing.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..logs import describe_error
from .kernel import Kernel, interpreting

log = logging.getLogger("tilecraft")

MANY = 32  # from this many compile jobs on, the progress bar shows at once (else after 2 s)
STATS = {"kernels": 0, "jobs": 0, "seconds": 0.0}  # totals over this process, for benchmarks


@dataclass
class Job:
    """One Triton compile: the kernels it serves share source, config and argument dtypes."""

    key: tuple
    kernels: list = field(default_factory=list)
    seconds: float = 0.0


def plan_jobs(kernels: list[Kernel]) -> list[Job]:
    """One job per distinct (source, config, argument dtypes), in first-use order; kernels whose launch would
    do nothing (an empty grid or tensor) are never launched, so never compiled."""
    jobs: dict[tuple, Job] = {}
    for k in [u for k in kernels for u in k.compile_units()]:
        if k.launches_nothing():
            continue
        key = (k.source, tuple(sorted(k.config.items())), tuple(a.dtype for a in k.args))
        jobs.setdefault(key, Job(key)).kernels.append(k)
    return list(jobs.values())


def threads(n_jobs: int) -> int:
    env = os.environ.get("TILECRAFT_COMPILE_THREADS")
    n = int(env) if env else min(32, os.cpu_count() or 1)
    return max(1, min(n, n_jobs))


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr, or None: shown on a terminal after 2 s (at once from MANY jobs), or as
    TILECRAFT_PROGRESS says."""
    mode = os.environ.get("TILECRAFT_PROGRESS")
    if mode == "0" or (mode != "1" and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="kernel", file=sys.stderr, leave=False,
                delay=0 if mode == "1" or total >= MANY else 2.0)


def run_jobs(jobs: list[Job], work: Callable[[Job], None], workers: int,
             desc: str = "tilecraft: compiling kernels") -> dict[int, BaseException]:
    """work(job) for every job on `workers` threads; returns {job index: the exception it raised}. Each job's
    wall time lands in job.seconds."""

    def timed(job: Job):
        t0 = time.perf_counter()
        try:
            work(job)
        finally:
            job.seconds = time.perf_counter() - t0

    errors: dict[int, BaseException] = {}
    bar = progress_bar(len(jobs), desc)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tilecraft-compile") as pool:
            futures = {pool.submit(timed, job): i for i, job in enumerate(jobs)}
            for f in as_completed(futures):
                if f.exception() is not None:
                    errors[futures[f]] = f.exception()
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return errors


def warm(kernel: Kernel, device_index: int) -> None:
    """Compile kernel for its config as its first launch will (same constexprs, options and specialization)."""
    torch.cuda.set_device(device_index)  # per thread: Triton compiles for the current device
    consts, opts, grid = kernel.plan(kernel.config)
    fn = kernel.fn
    if len(fn.arg_names) != len(kernel.args) + len(consts):
        return  # not a pointers-and-constexprs kernel: it compiles at its first launch
    fn.warmup(*[a.dtype for a in kernel.args], grid=grid, **consts, **opts)


def from_triton_compiler(e: BaseException) -> bool:
    """Was e raised while Triton compiled (frontend, MLIR passes, ptxas), not while binding arguments? Only
    such errors condemn a kernel; any other leaves it to its first launch, which compiles it the usual way."""
    tb = e.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if "/triton/compiler/" in path or "/triton/backends/" in path:
            return True
        tb = tb.tb_next
    return False


_PREWARM: list = []  # the thread prewarm_triton_key started, once per process


def prewarm_triton_key() -> None:
    """Start working out Triton's cache key in a background thread, once per process. Every Triton compile,
    cache hits included, needs `triton_key()`, which hashes libtriton.so (about 400 MB: a fixed cost of 0.3-2 s
    per process, paid at the first kernel otherwise). Hashing and reading release the GIL, so started when a
    model is compiled it overlaps Dynamo's tracing. Only where kernels compile for CUDA, not on the
    interpreter; any failure is left to the compile that needs the key (it computes it again)."""
    if _PREWARM or interpreting() or not torch.cuda.is_available():
        return

    def work():
        try:
            from triton.runtime.cache import triton_key

            triton_key()
        except Exception as e:  # noqa: BLE001 - the first compile computes it again and reports any error
            log.debug("tilecraft: prewarming Triton's cache key failed (%s)", e)

    _PREWARM.append(threading.Thread(target=work, name="tilecraft-triton-key", daemon=True))
    _PREWARM[0].start()


def compile_kernels(kernels: list[Kernel], devices) -> dict[int, BaseException]:
    """Compile the distinct kernels of a program concurrently when it runs on CUDA (`devices`: where its inputs
    live, e.g. "cuda"); returns {id(kernel): error} for kernels whose compile failed (logged once each)."""
    if interpreting() or not kernels or "cuda" not in {str(d).split(":")[0] for d in devices}:
        return {}
    jobs = plan_jobs(kernels)
    if not jobs:
        return {}
    for t in _PREWARM:  # wait for the key rather than hash libtriton.so again alongside (lru_cache does not lock)
        t.join()
    index = torch.cuda.current_device()
    for job in jobs:  # import each source and make its per-device cache here, not racing in the threads
        fn = job.kernels[0].fn
        fn.device_caches[index]
    t0 = time.perf_counter()
    errors = run_jobs(jobs, lambda job: warm(job.kernels[0], index), threads(len(jobs)))
    seconds = time.perf_counter() - t0
    STATS["kernels"] += len(kernels)
    STATS["jobs"] += len(jobs)
    STATS["seconds"] += seconds
    log.info("tilecraft: compiled %d distinct kernels (of %d) in %.1fs", len(jobs), len(kernels), seconds)
    failed = {}
    for i, e in errors.items():
        if not from_triton_compiler(e):
            log.debug("tilecraft: warming %s up failed (%s: %s); its first launch compiles it",
                      jobs[i].kernels[0].name, type(e).__name__, e)
            continue
        for k in jobs[i].kernels:
            failed[id(k)] = e
            log.warning("tilecraft: kernel %s failed to compile (%s); its ops run through torch", k.name,
                        describe_error(e))
    return failed
