"""The accuracy report of a quantization: per-layer and overall relative error against the float model."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (Frobenius, float64)."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).norm() / e.norm().clamp(min=1e-30))


@dataclass
class LayerError:
    name: str
    shape: tuple[int, int]
    weight_rel_error: float
    output_rel_error: float | None = None  # layer output on the calibration inputs (same layer inputs)


@dataclass
class QuantReport:
    scheme: str
    group_size: int = 0
    layers: list[LayerError] = field(default_factory=list)
    model_rel_error: float | None = None  # final model output, quantized vs float

    def add_weight_error(self, name, w, wq, out_err=None):
        self.layers.append(LayerError(name, tuple(w.shape), rel_error(wq, w), out_err))

    def table(self) -> str:
        g = f", group {self.group_size}" if self.group_size else ""
        lines = [f"quantization report: {self.scheme}{g}",
                 f"{'layer':<28} {'N x K':>12} {'weight rel err':>15} {'output rel err':>15}"]
        for l in self.layers:
            out = f"{l.output_rel_error:.2e}" if l.output_rel_error is not None else "-"
            lines.append(f"{l.name:<28} {f'{l.shape[0]}x{l.shape[1]}':>12} {l.weight_rel_error:>15.2e} {out:>15}")
        overall = f"{self.model_rel_error:.2e}" if self.model_rel_error is not None else "- (no calibration inputs)"
        lines.append(f"overall model output rel err: {overall}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _as_batches(calibration_inputs) -> list[tuple]:
    if isinstance(calibration_inputs, torch.Tensor):
        return [(calibration_inputs,)]
    if isinstance(calibration_inputs, tuple):
        return [calibration_inputs]
    return [b if isinstance(b, tuple) else (b,) for b in calibration_inputs]


def _flat(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().flatten()
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, (list, tuple)):
        return torch.cat([_flat(o) for o in out if isinstance(o, (torch.Tensor, list, tuple))])
    return torch.zeros(0)


@torch.no_grad()
def measure(model: nn.Module, float_layers: dict, quant_layers: dict, calibration_inputs, report):
    """Run the float model on the calibration inputs, recording each Linear's input; compare each quantized layer
    on those same inputs, then the whole model float vs quantized (layers swapped temporarily)."""
    batches = _as_batches(calibration_inputs)
    seen: dict[str, list] = {n: [] for n in float_layers}
    hooks = [lin.register_forward_hook(lambda m, a, o, n=n: seen[n].append((a[0], o)))
             for n, lin in float_layers.items()]
    try:
        ref_outs = [_flat(model(*b)) for b in batches]
    finally:
        for h in hooks:
            h.remove()
    for n, q in quant_layers.items():
        pairs = seen[n]
        out_err = None
        if pairs:
            got = torch.cat([q(a.to(q.qweight.device)).float().flatten() for a, _ in pairs])
            out_err = rel_error(got, torch.cat([o.float().flatten() for _, o in pairs]))
        report.add_weight_error(n, float_layers[n].weight, q.dequantized_weight(), out_err)
    swap = {}
    for n, q in quant_layers.items():
        parent_name, _, attr = n.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        swap[n] = (parent, attr)
        setattr(parent, attr, q)
    try:
        q_outs = [_flat(model(*b)) for b in batches]
    finally:
        for n, (parent, attr) in swap.items():
            setattr(parent, attr, float_layers[n])
    report.model_rel_error = rel_error(torch.cat(q_outs), torch.cat(ref_outs))
    return report
