"""Swap a model's nn.Linear layers for QuantizedLinear and measure the damage.

* `quantize(model, scheme)` returns a NEW model and leaves `model` unchanged: every module is copied shallowly
  (the copies share the original's parameters and buffers, so no weight memory is doubled) and the Linear
  layers of the copy are QuantizedLinears. `tilecraft.compile(model, quantize=...)` uses it.
* `quantize_(model, scheme)` rewrites `model` in place (torchao's naming) and returns it.

Both take the scheme strings of `compile(quantize=...)`: "int8_weight_only", "int4_weight_only" (group size:
the largest of 128/64/32 that divides every in_features), "int4_weight_only:64" (explicit group) or "fp8".
"""
from __future__ import annotations

import copy

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


def parse_scheme(model: nn.Module, scheme: str, group_size: int | None) -> tuple[str, int]:
    """(scheme name, int4 group size) from a scheme string such as "int4_weight_only:64"."""
    if not isinstance(scheme, str):
        raise QuantError(f"quantization scheme must be a string, got {type(scheme).__name__}")
    name, _, group = scheme.partition(":")
    if name not in SCHEMES:
        raise QuantError(f"unknown quantization scheme {name!r}; known: {list(SCHEMES)} "
                         f"(int4 takes a group size as 'int4_weight_only:64')")
    if group:
        if not group.isdigit() or name != "int4_weight_only":
            raise QuantError(f"quantize={scheme!r}: only int4_weight_only takes a group size, as an integer "
                             f"after ':' (one of {INT4_GROUP_SIZES})")
        if group_size is not None and group_size != int(group):
            raise QuantError(f"quantize={scheme!r} conflicts with group_size={group_size}")
        group_size = int(group)
    if group_size is None:
        group_size = 128
        if name == "int4_weight_only":  # the largest group size that every layer takes
            ks = [m.in_features for m in model.modules() if isinstance(m, nn.Linear)]
            fits = [g for g in sorted(INT4_GROUP_SIZES, reverse=True) if all(k % g == 0 for k in ks)]
            group_size = fits[0] if fits else 128  # none fits: the check below names the layer that does not
    return name, group_size


def _quantized_layers(model, scheme, group_size, calibration_inputs, per_row, skip, sibling_blocks=False):
    """Check every target layer, then build {name: QuantizedLinear} and the accuracy report."""
    if not isinstance(model, nn.Module):
        raise QuantError(f"tilecraft.quantize expects an nn.Module, got {type(model).__name__}")
    scheme, group_size = parse_scheme(model, scheme, group_size)
    if scheme == "int4_weight_only" and group_size not in INT4_GROUP_SIZES:
        raise QuantError(f"int4_weight_only: group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    if scheme == "fp8":
        check_fp8_device(_device_of(model))
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in skip]
    if not targets:
        raise QuantError(f"{type(model).__name__} has no nn.Linear layers to quantize")
    for name, lin in targets:  # check every layer before quantizing any
        if scheme == "int4_weight_only":
            try:
                check_int4_shape(lin.out_features, lin.in_features, group_size)
            except QuantError as e:
                raise QuantError(f"layer {name!r}: {e}") from None
    float_layers = dict(targets)
    quant_layers = _build_layers(targets, scheme, group_size, per_row, sibling_blocks)
    report = QuantReport(scheme, group_size if scheme == "int4_weight_only" else 0)
    if calibration_inputs is not None:
        report = measure(model, float_layers, quant_layers, calibration_inputs, report)
    else:
        for name in quant_layers:
            report.add_weight_error(name, float_layers[name].weight, quant_layers[name].dequantized_weight())
    return quant_layers, report


def _build_layers(targets, scheme, group_size, per_row, sibling_blocks=False) -> dict[str, QuantizedLinear]:
    """{name: QuantizedLinear}. With `sibling_blocks` (compile's private copy only), layers that share a parent
    module and in_features (q/k/v/o, gate/up) get their qweight, scales and zeros (and biases, when all have one)
    as consecutive row blocks of ONE tensor per kind, in registration order: the compiler's merge of sibling
    linears (passes.merge_sibling_qlinears) then reads their concatenation as a view of that tensor, with no
    second copy of the weights. A model handed to the user keeps one tensor per buffer (shared storage would
    trip safetensors / save_pretrained); compiling it later copies the merged weights once."""
    layers = {name: QuantizedLinear.from_float(lin, scheme, group_size, per_row) for name, lin in targets}
    if not sibling_blocks or scheme == "fp8":
        return layers
    families: dict = {}
    for name, lin in targets:
        families.setdefault((name.rpartition(".")[0], lin.in_features), []).append(name)
    for names in (f for f in families.values() if len(f) >= 2):
        for kind in ("qweight", "scales", "zeros", "bias"):
            parts = [getattr(layers[n], kind) for n in names]
            if any(p is None or p.dim() == 0 for p in parts) or len({p.dtype for p in parts}) != 1:
                continue
            for n, block in zip(names, torch.cat(parts).split([p.shape[0] for p in parts])):
                setattr(layers[n], kind, block)
    return layers


def _share_copy(module: nn.Module, replace: dict[str, nn.Module], prefix: str = "", memo=None) -> nn.Module:
    """A copy of the module tree whose modules are new objects (so swapping a child touches only the copy) but
    whose parameters and buffers are the original tensors; modules named in `replace` are swapped in."""
    memo = {} if memo is None else memo
    if prefix in replace:
        return replace[prefix]
    if id(module) in memo:  # a module used twice stays one module
        return memo[id(module)]
    new = memo[id(module)] = copy.copy(module)  # shallow: the attribute dict is new, its values shared
    new._parameters = dict(module._parameters)
    new._buffers = dict(module._buffers)
    new._modules = {name: None if child is None else
                    _share_copy(child, replace, f"{prefix}.{name}" if prefix else name, memo)
                    for name, child in module._modules.items()}
    return new


def quantize(model: nn.Module, scheme: str = "int8_weight_only", group_size: int | None = None,
             calibration_inputs=None, per_row: bool = True, skip: tuple[str, ...] = (),
             sibling_blocks: bool = False) -> nn.Module:
    """A new model whose nn.Linears (except names in `skip`) are QuantizedLinears; `model` is left unchanged
    and shares its other parameters and buffers with the result (no copy of their memory).

    scheme: "int8_weight_only" | "int4_weight_only[:group]" (group_size 32/64/128) | "fp8" (Hopper only).
    calibration_inputs: an input tuple (or a list of them) to measure per-layer relative error on; the report
    is `result.tilecraft_quant_report` (print it for a table).
    sibling_blocks: sibling layers' buffers as row blocks of one tensor (what `compile(quantize=...)` asks for;
    see _build_layers)."""
    quant_layers, report = _quantized_layers(model, scheme, group_size, calibration_inputs, per_row, skip,
                                             sibling_blocks)
    new = _share_copy(model, quant_layers)
    new.tilecraft_quant_report = report
    return new


def quantize_(model: nn.Module, scheme: str = "int8_weight_only", group_size: int | None = None,
              calibration_inputs=None, per_row: bool = True, skip: tuple[str, ...] = ()) -> nn.Module:
    """Like `quantize`, but rewrites `model` in place (its Linear layers become QuantizedLinears); returns it."""
    quant_layers, report = _quantized_layers(model, scheme, group_size, calibration_inputs, per_row, skip)
    for name, q in quant_layers.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, q)
    model.tilecraft_quant_report = report
    return model
