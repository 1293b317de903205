"""`tilecraft.quantize(model, scheme)`: swap nn.Linear layers for QuantizedLinear and measure the damage."""
from __future__ import annotations

import torch
import torch.nn as nn

from .formats import INT4_GROUP_SIZES, SCHEMES, QuantError, check_int4_shape
from .kernels import check_fp8_device
from .modules import QuantizedLinear
from .report import QuantReport, measure


def _device_of(model: nn.Module) -> torch.device:
    for p in list(model.parameters()) + list(model.buffers()):
        return p.device
    return torch.device("cpu")


def quantize(model: nn.Module, scheme: str = "int8_weight_only", group_size: int = 128,
             calibration_inputs=None, per_row: bool = True, skip: tuple[str, ...] = ()) -> nn.Module:
    """Replace every nn.Linear (except names in `skip`) with a QuantizedLinear using `scheme`, in place.

    scheme: "int8_weight_only" | "int4_weight_only" (group_size 32/64/128) | "fp8" (Hopper only).
    calibration_inputs: an input tuple (or a list of them) to measure per-layer relative error on; the report
    is `model.tilecraft_quant_report` (print it for a table). Returns the model."""
    if scheme not in SCHEMES:
        raise QuantError(f"unknown quantization scheme {scheme!r}; known: {list(SCHEMES)}")
    if not isinstance(model, nn.Module):
        raise QuantError(f"tilecraft.quantize expects an nn.Module, got {type(model).__name__}")
    if scheme == "int4_weight_only" and group_size not in INT4_GROUP_SIZES:
        raise QuantError(f"int4_weight_only: group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    if scheme == "fp8":
        check_fp8_device(_device_of(model))
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name not in skip]
    if not targets:
        raise QuantError(f"{type(model).__name__} has no nn.Linear layers to quantize")
    for name, lin in targets:  # check every layer before changing any
        if scheme == "int4_weight_only":
            try:
                check_int4_shape(lin.out_features, lin.in_features, group_size)
            except QuantError as e:
                raise QuantError(f"layer {name!r}: {e}") from None
    float_layers = {name: lin for name, lin in targets}
    quant_layers = {name: QuantizedLinear.from_float(lin, scheme, group_size, per_row) for name, lin in targets}
    report = QuantReport(scheme, group_size if scheme == "int4_weight_only" else 0)
    if calibration_inputs is not None:
        report = measure(model, float_layers, quant_layers, calibration_inputs, report)
    else:
        for name in quant_layers:
            report.add_weight_error(name, float_layers[name].weight, quant_layers[name].dequantized_weight())
    for name, q in quant_layers.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, q)
    model.tilecraft_quant_report = report
    return model
