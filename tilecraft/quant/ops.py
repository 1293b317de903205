"""The quantized-linear ops at both levels.

* torch.library custom ops `tilecraft::wq_linear_int8`, `tilecraft::wq_linear_int4`, `tilecraft::fp8_linear`: eager
  = dequantize-then-matmul reference (float32 math), plus fake kernels, so Dynamo/aot_autograd capture each as
  one ATen-level node.
* IR ops of the same names (category "matmul"; capture imports the FX target "tilecraft.<op>.default" to them),
  whose reference runs the Triton kernels (on CUDA, or through the interpreter on CPU) via run_quantized_linear.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..ir import TensorType
from ..ir.ops import op as register_ir_op
from ..logs import describe_error
from .formats import QuantError, dequantize_tensors, quantize_fp8_activation
from .kernels import check_fp8_device, interpreting, run_quantized_linear


def _reference(x, w_float, bias):
    out = torch.nn.functional.linear(x.float(), w_float, None if bias is None else bias.float())
    return out.to(x.dtype)


def _fake(x, qweight, n):
    return x.new_empty((*x.shape[:-1], n))


@torch.library.custom_op("tilecraft::wq_linear_int8", mutates_args=())
def wq_linear_int8(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x @ (qweight * scales[:, None]).T + bias, computed in float32 (the reference)."""
    return _reference(x, dequantize_tensors("int8_weight_only", qweight, scales), bias)


@wq_linear_int8.register_fake
def _(x, qweight, scales, bias):
    return _fake(x, qweight, qweight.shape[0])


@torch.library.custom_op("tilecraft::wq_linear_int4", mutates_args=())
def wq_linear_int4(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   bias: Optional[torch.Tensor], group_size: int) -> torch.Tensor:
    """x @ ((unpack(qweight) - zeros) * scales).T + bias, per group of `group_size` along K (the reference)."""
    return _reference(x, dequantize_tensors("int4_weight_only", qweight, scales, zeros, group_size), bias)


@wq_linear_int4.register_fake
def _(x, qweight, scales, zeros, bias, group_size):
    return _fake(x, qweight, qweight.shape[0])


@torch.library.custom_op("tilecraft::fp8_linear", mutates_args=())
def fp8_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: Optional[torch.Tensor],
               act_per_row: bool) -> torch.Tensor:
    """fp8 reference: activations quantized to e4m3 (per row or per tensor) then a float32 matmul."""
    x2 = x.reshape(-1, x.shape[-1])
    xq, xs = quantize_fp8_activation(x2, act_per_row)
    xd = (xq.float() * (xs[:, None] if act_per_row else xs)).reshape(x.shape).to(x.dtype)
    return _reference(xd, dequantize_tensors("fp8", qweight, scales), bias)


@fp8_linear.register_fake
def _(x, qweight, scales, bias, act_per_row):
    return _fake(x, qweight, qweight.shape[0])


CUSTOM_OPS = {"wq_linear_int8": wq_linear_int8, "wq_linear_int4": wq_linear_int4, "fp8_linear": fp8_linear}


def _use_kernels(x: torch.Tensor) -> bool:
    return x.device.type == "cuda" or (x.device.type == "cpu" and interpreting())


_WARNED: set = set()
log = logging.getLogger("tilecraft")


def _ir_ref(name: str):
    def ref(*inputs, pair=False, rms_eps=None, rope=None, **attrs):
        if rope is not None:  # (passes.fuse_rope_qlinear) cos and sin come last; RoPE on the first rope[0] columns
            y = ref(*inputs[:-2], pair=pair, rms_eps=rms_eps, **attrs)
            return rope_columns(y, *inputs[-2:], *rope)
        if pair or rms_eps is not None:
            y = ref(*(inputs[:-1] if rms_eps is not None else inputs), **attrs)
            if rms_eps is not None:  # (passes.fold_rms_norm) rows scaled by rsqrt(sum(ss) / K + eps), ss last
                ss = inputs[-1].float().sum(-1, keepdim=True)
                y = (y.float() * torch.rsqrt(ss / inputs[0].shape[-1] + rms_eps)).to(y.dtype)
            if pair:  # (merge_sibling_qlinears) two siblings of equal size: the halves of the rows' result
                return y[..., :y.shape[-1] // 2].contiguous(), y[..., y.shape[-1] // 2:].contiguous()
            return y
        x = inputs[0]
        if name == "fp8_linear" and x.device.type == "cuda":
            check_fp8_device(x.device)  # pre-Hopper GPUs: a clear error (CPU: the eager reference below)
            return run_quantized_linear(name, list(inputs), attrs)
        if name != "fp8_linear" and _use_kernels(x):
            try:
                return run_quantized_linear(name, list(inputs), attrs)
            except QuantError:
                raise
            except Exception as e:  # noqa: BLE001 - a kernel that does not compile here: the eager reference
                if name not in _WARNED:
                    _WARNED.add(name)
                    log.warning("tilecraft: the %s kernel failed (%s); it runs as dequantize-then-matmul in "
                                "torch", name, describe_error(e))
        return CUSTOM_OPS[name](*inputs, **attrs)  # no Triton here: the eager reference

    ref.__name__ = f"{name}_ref"
    return ref


def rope_columns(y, cos, sin, n_rot: int, d: int):
    """y [B, T, N] with HF's RoPE applied to its first n_rot columns, read as heads of d: each head x becomes x *
    cos + rotate_half(x) * sin (cos, sin [B or 1, 1, T, d], broadcast over the heads), computed in float32 from y
    as stored and rounded once; the other columns unchanged."""
    B, T = y.shape[:2]
    x = y[..., :n_rot].float().reshape(B, T, n_rot // d, d).transpose(1, 2)
    rot = torch.cat([-x[..., d // 2:], x[..., :d // 2]], dim=-1)
    x = (x * cos.float() + rot * sin.float()).transpose(1, 2).reshape(B, T, n_rot).to(y.dtype)
    return torch.cat([x, y[..., n_rot:]], dim=-1)


def _infer(opdef, inputs, attrs):
    x, w = inputs[0].type, inputs[1].type
    count = 2 if attrs.get("pair") else 1  # a pair: the results of the weight's first and second halves of rows
    return [TensorType((*x.shape[:-1], w.shape[0] // count), x.dtype, None, x.device) for _ in range(count)]


def _float_activations(node) -> bool:
    """The qmatmul template takes float activations with at least one element."""
    x = node.inputs[0].type
    return x.dtype in (torch.float32, torch.float16, torch.bfloat16) and x.numel > 0


for _name in CUSTOM_OPS:
    # int8/int4: codegen's qmatmul template (fused epilogue); fp8 quantizes its activations in torch first, so
    # it runs through this reference (the fp8 kernel) as a torch group
    register_ir_op(_name, "matmul", _ir_ref(_name), [f"tilecraft.{_name}.default"], infer_fn=_infer,
                   doc="quantized linear; dequantization fused into the Triton kernel's weight loads",
                   num_outputs=lambda attrs: 2 if attrs.get("pair") else 1,
                   **({} if _name == "fp8_linear" else {"template": "qmatmul", "accepts": _float_activations}))


def _sample(name: str):
    """Random valid applications for tilecraft.ir.samples (registry tests, fuzzer)."""
    def f(r):
        from .formats import quantize_weight

        m, k, n = r.randint(1, 5), r.choice([32, 64]), r.randint(1, 9)
        g = torch.Generator().manual_seed(r.randrange(2**31))
        dtype = r.choice([torch.float32, torch.float16])
        x = torch.randn(m, k, generator=g).to(dtype)
        bias = torch.randn(n, generator=g).to(dtype) if r.random() < 0.5 else None
        scheme = {"wq_linear_int8": "int8_weight_only", "wq_linear_int4": "int4_weight_only"}.get(name, "fp8")
        qw = quantize_weight(torch.randn(n, k, generator=g), scheme, 32)
        if name == "wq_linear_int4":
            return [x, qw.qweight, qw.scales, qw.zeros, bias], {"group_size": 32}
        return [x, qw.qweight, qw.scales, bias], ({"act_per_row": True} if name == "fp8_linear" else {})
    return f


def _register_samplers():
    from ..ir import samples

    for name in CUSTOM_OPS:
        samples._SPECIAL.setdefault(name, _sample(name))


_register_samplers()
