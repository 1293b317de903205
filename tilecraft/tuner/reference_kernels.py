"""A plain grouped Triton GEMM that honors every matmul knob, wrapped in the `Kernel` protocol.

It is what the tuner's tests and bench/tune_gemm.py tune until (and besides) codegen's matmul template.
SPLIT_K > 1 writes fp32 partial products to a workspace [SPLIT_K, M, N] that is summed afterwards
(deterministic, unlike atomics).
"""
from __future__ import annotations

import hashlib

import torch
import triton
import triton.language as tl

from ..codegen.kernel import interpreting, own_kernels


def _grouped_gemm(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cs, stride_cm,
                  stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, tl.cdiv(K, BLOCK_K * SPLIT_K)):
        k_left = K - (k0 * SPLIT_K + pid_k) * BLOCK_K
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (tl.arange(0, BLOCK_K)[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(tl.arange(0, BLOCK_K)[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
        if UPCAST:  # the interpreter's tl.dot is wrong on bf16 operands
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc += tl.dot(a, b)
        a_ptrs += BLOCK_K * SPLIT_K * stride_ak
        b_ptrs += BLOCK_K * SPLIT_K * stride_bk
    c_ptrs = c_ptr + pid_k * stride_cs + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


with own_kernels():  # interpreted without CUDA, without setting TRITON_INTERPRET for the process
    _grouped_gemm = triton.jit(_grouped_gemm)


class ReferenceGemm:
    """C[M,N] = A[M,K] @ B[K,N] with a launch config of BLOCK_M/N/K, GROUP_M, SPLIT_K, num_warps, num_stages.

    Satisfies the tuner's kernel protocol (template, shapes, dtype, key, default_config, launch, make_args,
    out_positions) and pickles (the subprocess measurer rebuilds it in a worker).
    """

    template = "matmul"

    def __init__(self, M: int, N: int, K: int, dtype: torch.dtype = torch.float16, name: str | None = None):
        self.M, self.N, self.K, self.dtype = M, N, K, dtype
        self.shapes = {"B": 1, "M": M, "N": N, "K": K}
        self.name = name or f"gemm_{M}x{N}x{K}_{str(dtype).replace('torch.', '')}"
        self.config = self.default_config()
        self.info: dict = {}
        self._ws: dict = {}

    @property
    def key(self) -> str:
        return hashlib.sha256(f"matmul\nreference-grouped-gemm-v1\n{self.dtype}".encode()).hexdigest()[:16]

    @property
    def out_positions(self) -> list[int]:
        return [2]

    def default_config(self) -> dict:
        """A reasonable heuristic: 64-128 tiles, BLOCK_K 32-64, 4 warps, 3 stages."""
        bm = 128 if self.M >= 128 else max(16, triton.next_power_of_2(self.M))
        bn = 128 if self.N >= 128 else max(16, triton.next_power_of_2(self.N))
        bk = 64 if self.K >= 64 else max(16, triton.next_power_of_2(self.K))
        if bm * bn / 128 > 128:
            bn = 64
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8 if self.M > bm else 1, "SPLIT_K": 1,
                "num_warps": 4, "num_stages": 3}

    def make_args(self, device="cpu", seed: int = 0) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(self.M, self.K, generator=gen).to(device=device, dtype=self.dtype)
        b = torch.randn(self.K, self.N, generator=gen).to(device=device, dtype=self.dtype)
        c = torch.zeros(self.M, self.N, device=device, dtype=self.dtype)
        return [a, b, c]

    def reference(self, args: list[torch.Tensor]) -> torch.Tensor:
        return (args[0].float() @ args[1].float()).to(self.dtype)

    def launch(self, args: list[torch.Tensor], config: dict | None = None) -> None:
        cfg = self.config if config is None else config
        a, b, c = args
        M, K = a.shape
        N = b.shape[1]
        split = cfg["SPLIT_K"]
        grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]), split)
        if split == 1:
            out, s_stride = c, 0
        else:
            wkey = (split, M, N, c.device)
            out = self._ws.get(wkey)
            if out is None:
                out = self._ws[wkey] = torch.empty(split, M, N, device=c.device, dtype=torch.float32)
            s_stride = out.stride(0)
        cm, cn = (c.stride(0), c.stride(1)) if split == 1 else (out.stride(1), out.stride(2))
        _grouped_gemm[grid](a, b, out, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), s_stride, cm, cn,
                            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
                            GROUP_M=cfg["GROUP_M"], SPLIT_K=split, UPCAST=interpreting(),
                            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        if split > 1:
            torch.sum(out, dim=0, out=c) if c.dtype == torch.float32 else c.copy_(out.sum(0))

    def describe(self) -> str:
        return f"matmul (M={self.M}, N={self.N}, K={self.K}; {str(self.dtype).replace('torch.', '')}) reference GEMM"

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_ws"] = {}
        return d


def tiny_gemms() -> list[ReferenceGemm]:
    """A few interpreter-sized GEMMs (for `tilecraft tune tilecraft.tuner.reference_kernels:tiny_gemms`)."""
    return [ReferenceGemm(32, 32, 64, torch.float16), ReferenceGemm(16, 64, 32, torch.float32)]
