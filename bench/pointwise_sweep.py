"""Tile of the generated pointwise kernel on a memory-bound workload: the anchors' linear+GELU epilogue (8192 x
4096 bf16, cuBLAS GEMM then exact GELU) and eltchain, GPU us of the pointwise kernel per (XBLOCK, num_warps).
    python bench/pointwise_sweep.py"""
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import anchors  # noqa: E402

import tilecraft  # noqa: E402
from tilecraft.testing import gpu_profile  # noqa: E402

CFGS = [(1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (4096, 16), (512, 4)]
for name, make, inputs, dtype, *_ in anchors.workloads(False):
    if name not in ("linear_gelu_8192x4096x4096", "eltchain_16M"):
        continue
    torch.manual_seed(0)
    m = make().cuda().to(dtype).eval()
    xs = [x.cuda().to(dtype) for x in inputs()]
    fn = tilecraft.compile(m)
    with torch.no_grad():
        fn(*xs)
    ks = [k for g in fn.report.graphs for k in g.kernels]
    pw = [e for k in ks for e in ([k] if k.template == "pointwise" else
                                   [getattr(getattr(k, "aten", None), "epilogue", None)]) if e is not None]
    for e in pw:
        args = e.make_args("cuda")
        for xb, nw in CFGS:
            cfg = {**e.config, "XBLOCK": xb, "num_warps": nw}
            e.launch(args, cfg)
            rows = gpu_profile(lambda: e.launch(args, cfg), 50)
            print(f"{name} {e.name} XBLOCK={xb} num_warps={nw}: {sum(r[1] for r in rows):.1f} us", flush=True)

# what a hand-written GELU kernel reaches on the same 8192 x 4096 bf16 tensor, with and without the bounds mask
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _gelu_ref(x_ptr, y_ptr, n, XBLOCK: tl.constexpr, MASK: tl.constexpr):
    offs = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    if MASK:
        x = tl.load(x_ptr + offs, offs < n, other=0).to(tl.float32)
    else:
        x = tl.load(x_ptr + offs).to(tl.float32)
    y = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    if MASK:
        tl.store(y_ptr + offs, y.to(tl.bfloat16), offs < n)
    else:
        tl.store(y_ptr + offs, y.to(tl.bfloat16))


x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16)
y = torch.empty_like(x)
for xb, nw in CFGS:
    for mask in (True, False):
        def go(xb=xb, nw=nw, mask=mask):
            _gelu_ref[(x.numel() // xb,)](x, y, x.numel(), XBLOCK=xb, MASK=mask, num_warps=nw)
        go()
        rows = gpu_profile(go, 50)
        print(f"hand-written gelu XBLOCK={xb} num_warps={nw} mask={mask}: {sum(r[1] for r in rows):.1f} us", flush=True)
