"""The differential oracle: compile a program with a backend, run it, compare with eager, classify failures.

Tolerances are by dtype (tilecraft.testing) and calibrated against a float64 reference of the same program
from the same (rounded) inputs: a compiled output is wrong only where it is outside the dtype tolerance of
eager AND farther from float64 than K times eager's own largest error on that output (plus the tolerance).
Eager's error grows with reduction length and dtype exactly as a correct kernel's does, so long fp16/bf16 sums
and matmuls are judged against what their precision allows, and a backend about as accurate as eager never
counts as wrong. Integer and boolean outputs must be equal.

Every verdict falls in one of four outcomes: matched (in generated kernels), mismatched, crashed, and fell
back (a group whose kernel failed to generate or launch, an op the importer could not type, or a whole graph,
ran through torch: read from `CompileReport.fell_back()`, the runtime's structured record, not from logs).
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..testing import tolerance

CLASSES = ("compile_error", "runtime_crash", "wrong_result", "nan_inf_mismatch", "shape_dtype_mismatch", "fell_back")
OUTCOMES = {"ok": "matched", "wrong_result": "mismatched", "nan_inf_mismatch": "mismatched",
            "shape_dtype_mismatch": "mismatched", "compile_error": "crashed", "runtime_crash": "crashed",
            "fell_back": "fell_back"}
K_EAGER_ERROR = 3.0


@dataclass
class Verdict:
    """The outcome of one differential check; `status` is "ok" or one of CLASSES."""

    status: str
    message: str = ""
    exc_type: str = ""
    max_error: float = 0.0
    ops: list[str] = field(default_factory=list)
    rules: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # tilecraft's warnings (fallbacks to torch)

    @property
    def failed(self) -> bool:
        return self.status != "ok"

    @property
    def outcome(self) -> str:
        """matched | mismatched | crashed | fell_back."""
        return OUTCOMES[self.status]

    @property
    def key(self) -> str:
        """How it fails: class + exception type + message pattern (what the reducer must preserve)."""
        return f"{self.status}|{self.exc_type}|{message_pattern(self.message) if self.exc_type else ''}"

    @property
    def signature(self) -> str:
        """Failure signature for dedup: the key plus the set of ops involved."""
        return f"{self.key}|{'+'.join(sorted(set(self.ops)))}"


def message_pattern(msg: str) -> str:
    """A message with its incidental parts (numbers, value names, quoted names, paths) blanked out."""
    line = next((ln.strip() for ln in msg.splitlines() if ln.strip()), "")
    line = re.sub(r"/[\w./-]+", "<path>", line)
    line = re.sub(r"%\w+", "%_", line)
    line = re.sub(r"0x[0-9a-fA-F]+|\d+(\.\d+)?(e[-+]?\d+)?", "N", line)
    line = re.sub(r"\b[vx]N(_N)?\b", "v", line)
    return line[:160]


# ------------------------------------------------------------------------------------------------ backends
def compile_with(module: torch.nn.Module, backend) -> tuple[Callable, Any]:
    """(compiled callable, compile report or None). `backend`: "tilecraft", "tilecraft-interpreted" (passes
    only: the IR runs through the reference interpreter, codegen off), a torch.compile backend name, or a
    backend callable (gm, example_inputs) -> callable."""
    if backend in ("tilecraft", "tilecraft-interpreted"):
        import tilecraft

        compiled = tilecraft.compile(module, codegen=backend == "tilecraft")
        return compiled, compiled.report
    if isinstance(backend, str) or callable(backend):
        return torch.compile(module, backend=backend, dynamic=False), None
    raise TypeError(f"backend must be 'tilecraft', a torch.compile backend name or a callable, got {backend!r}")


def _root(e: BaseException) -> BaseException:
    inner = getattr(e, "inner_exception", None)
    if inner is not None:
        return _root(inner)
    return e


def _is_compile_error(e: BaseException) -> bool:
    import torch._dynamo.exc as dexc

    return isinstance(e, (dexc.BackendCompilerFailed, dexc.TorchDynamoException))


# ------------------------------------------------------------------------------------------------ comparing
def _as_list(out) -> list:
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def compare(got, eager, ref64=None) -> tuple[str, str, float]:
    """(status, message, max error) of compiled outputs `got` against eager (and float64) outputs."""
    got, eager = _as_list(got), _as_list(eager)
    ref64 = _as_list(ref64) if ref64 is not None else [None] * len(eager)
    if len(got) != len(eager):
        return "shape_dtype_mismatch", f"{len(got)} outputs, eager gives {len(eager)}", 0.0
    worst = 0.0
    for i, (g, e, f) in enumerate(zip(got, eager, ref64)):
        dev = f.device if isinstance(f, torch.Tensor) else "cpu"  # compare where the reference lives
        g, e = (x.to(dev) if isinstance(x, torch.Tensor) else x for x in (g, e))
        if not isinstance(g, torch.Tensor):
            return "shape_dtype_mismatch", f"output {i} is a {type(g).__name__}, eager gives a tensor", 0.0
        if g.shape != e.shape or g.dtype != e.dtype:
            return ("shape_dtype_mismatch", f"output {i}: {g.dtype}{list(g.shape)}, eager gives "
                                            f"{e.dtype}{list(e.shape)}", 0.0)
        if not e.dtype.is_floating_point:
            if not torch.equal(g, e):
                return "wrong_result", f"output {i} ({e.dtype}) differs in {(g != e).sum().item()} elements", 1.0
            continue
        gd, ed = g.detach().double(), e.detach().double()
        if not torch.equal(torch.isnan(gd), torch.isnan(ed)) or not torch.equal(torch.isinf(gd), torch.isinf(ed)) \
                or not torch.equal(gd[torch.isinf(gd)], ed[torch.isinf(ed)]):
            n = (~torch.isfinite(gd)).sum().item()
            return "nan_inf_mismatch", f"output {i}: {n} non-finite elements, eager has " \
                                       f"{(~torch.isfinite(ed)).sum().item()}", float("inf")
        finite = torch.isfinite(ed)
        gd, ed = gd[finite], ed[finite]
        if gd.numel() == 0:
            continue
        rtol, atol = tolerance(e.dtype)
        allowed = atol + rtol * ed.abs()
        diff = (gd - ed).abs()
        bad = diff > allowed
        if f is not None and bad.any():
            fd = f.detach().double()[finite]
            eager_err = (ed - fd).abs().max().item()
            bad &= (gd - fd).abs() > K_EAGER_ERROR * eager_err + allowed
        worst = max(worst, diff.max().item())
        if bad.any():
            j = bad.nonzero()[0].item()
            return ("wrong_result", f"output {i}: {bad.sum().item()}/{bad.numel()} elements off, max abs error "
                                    f"{diff.max().item():.3g} (e.g. {gd[j].item():.6g} vs eager {ed[j].item():.6g})",
                    diff.max().item())
    return "ok", "", worst


# ------------------------------------------------------------------------------------------------ coverage
def _trace_ops(text: str) -> Counter:
    return Counter(m.group(1) for m in re.finditer(r"= (\w+)\(", text))


def _pattern(text: str) -> str:
    """A fallback reason with its incidental parts (value names, numbers, shapes) blanked out."""
    text = re.sub(r"\bgroup \d+ \(.*?\) runs through torch: ", "", text)
    text = re.sub(r"\bkernel \w+ failed", "kernel failed", text)
    return message_pattern(text)


def fallback_reason(message: str) -> str | None:
    """'codegen: <reason>' / 'launch: <reason>' for a tilecraft warning that a group or kernel fell back to
    torch (a fallback is not a wrong result, but campaigns count them); None for other warnings."""
    m = re.search(r"group \d+ \((\w+)\[.*?\) runs through torch: (.*)", message, re.S)
    if m:
        return f"codegen {m.group(1)}: {_pattern(m.group(2))}"
    m = re.search(r"kernel (\w+) failed \((.*)\); its ops run through torch", message, re.S)
    if m:
        template = next((t for t in ("pointwise", "reduction", "matmul") if t in m.group(1)), "kernel")
        return f"launch {template}: {_pattern(m.group(2))}"
    return None


def rule_coverage(report, warnings: list[str] | None = None) -> Counter:
    """What the compiler did, from its report: pass-level op rewrites (ops each pass removed or added),
    op fallbacks, whole-graph fallbacks, fusion groups by kind, kernels by template, fusion rules fired
    (kernel.info["rules"]), fused-op counts, and (from `warnings`) groups and kernels that fell back to torch."""
    c: Counter = Counter()
    for w in warnings or []:
        reason = fallback_reason(w)
        if reason:
            c[f"fallback {reason}"] += 1
    if report is None:
        return c
    for r in getattr(report, "graphs", []):
        if getattr(r, "error", None):
            c["graph ran through torch"] += 1
            continue
        for fb in getattr(r, "fallbacks", []) or []:
            c[f"fallback:{fb}"] += 1
        steps = getattr(getattr(r, "trace", None), "steps", []) or []
        for (_, before, _), (name, after, _) in zip(steps, steps[1:]):
            a, b = _trace_ops(before), _trace_ops(after)
            for op in (a - b):
                c[f"{name}: removes {op}"] += 1
            for op in (b - a):
                c[f"{name}: adds {op}"] += 1
        for g in getattr(getattr(r, "program", None), "groups", None) or []:
            c[f"group:{g.kind}"] += 1
        kernels = []
        try:
            kernels = list(getattr(r, "kernels", []) or [])
        except Exception:  # noqa: BLE001 - a report without kernels
            pass
        for k in kernels:
            info = getattr(k, "info", None)
            if isinstance(info, dict):
                kind = getattr(k, "template", None) or info.get("template") or type(k).__name__
                c[f"kernel:{kind}"] += 1
                for key in ("rules", "fusions", "fused_rules", "epilogue", "prologue"):
                    val = info.get(key)
                    if isinstance(val, (list, tuple, set)):
                        for x in val:
                            c[f"rule:{x}" if key == "rules" else f"{key}:{x}"] += 1
                    elif isinstance(val, str) and val:
                        c[f"{key}:{val}"] += 1
                ops = info.get("ops")
                if isinstance(ops, (list, tuple)) and len(ops) > 1:
                    c[f"fused into {kind}"] += 1
            else:
                c[f"kernel:{type(k).__name__}"] += 1
    return c


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a bad log record must not break a check
            pass


@contextlib.contextmanager
def tilecraft_warnings():
    """Collect tilecraft's warnings (fallbacks to torch) without printing them; yields the message list."""
    log = logging.getLogger("tilecraft")
    h = _Collect()
    level, propagate = log.level, log.propagate
    log.addHandler(h)
    log.setLevel(logging.WARNING)
    log.propagate = False
    try:
        yield h.messages
    finally:
        log.removeHandler(h)
        log.setLevel(level)
        log.propagate = propagate


# ------------------------------------------------------------------------------------------------ the check
def clone_strided(x: torch.Tensor) -> torch.Tensor:
    """A copy with the same strides, also for a view with gaps (every other element), which clone() would
    make contiguous: the fuzzer's strided inputs must reach the compiled program as they are."""
    if x._base is None or x.is_contiguous():
        return x.clone()
    return x._base.clone().as_strided(x.size(), x.stride(), x.storage_offset())


def fell_back_message(entries) -> tuple[str, str]:
    """(exception type, message) of the first fallback in `CompileReport.fell_back()`; what the reducer keeps."""
    stage, what, why = entries[0]
    exc = why.split(":", 1)[0] if stage in ("codegen", "compile", "launch") and ":" in why else stage
    return exc, f"{stage} fell back to torch: {why or what}" + (f"\n  in {what}" if why and what else "")


def check(source: str, inputs: list[torch.Tensor], backend="tilecraft", ref64=None,
          ops: list[str] | None = None, device: str = "cpu") -> Verdict:
    """Run program `source` eagerly and compiled with `backend` on `inputs` (moved to `device`); classify any
    difference. A tilecraft run whose report shows a fallback is "fell_back" unless its numbers are wrong."""
    from .emit import load_model

    t0 = time.perf_counter()
    model, _ = load_model(source)
    inputs = [x.to(device) for x in inputs]
    with torch.no_grad(), tilecraft_warnings() as warnings:
        eager = model(*[clone_strided(x) for x in inputs])
        report = None
        try:
            compiled, report = compile_with(model, backend)
            got = compiled(*[clone_strided(x) for x in inputs])
        except Exception as e:  # noqa: BLE001 - classifying failures is the point
            root = _root(e)
            status = "compile_error" if _is_compile_error(e) else "runtime_crash"
            return Verdict(status, f"{type(root).__name__}: {root}", type(root).__name__, 0.0, list(ops or []),
                           rule_coverage(report, warnings), time.perf_counter() - t0, list(warnings))
    status, msg, err = compare(got, eager, ref64)
    exc = ""
    fell = report.fell_back() if report is not None and hasattr(report, "fell_back") else []
    if status == "ok" and fell:
        status, (exc, msg) = "fell_back", fell_back_message(fell)
    return Verdict(status, msg, exc, err, list(ops or []), rule_coverage(report, warnings),
                   time.perf_counter() - t0, list(warnings))
