"""Per-kernel GPU time of one anchors.py workload, Inductor vs tilecraft (which kernel makes the difference).
    python bench/profile_anchor.py linear_gelu_8192x4096x4096"""
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import anchors  # noqa: E402

import tilecraft  # noqa: E402
from tilecraft.testing import gpu_profile  # noqa: E402

name = sys.argv[1]
for w in anchors.workloads(False):
    if w[0] not in sys.argv[1:]:
        continue
    name, make, inputs, dtype = w[:4]
    print(name)
    torch.manual_seed(0)
    m = make().cuda().to(dtype).eval()
    xs = [x.cuda().to(dtype) if x.is_floating_point() else x.cuda() for x in inputs()]
    for label, fn in (("inductor", torch.compile(m)), ("tilecraft", tilecraft.compile(m))):
        with torch.no_grad():
            for _ in range(3):
                fn(*xs)
            rows = gpu_profile(lambda: fn(*xs), 20)
        print(label, f"{sum(r[1] for r in rows):.1f} us")
        for k, us in rows[:6]:
            print(f"   {us:8.1f}  {k[:120]}")
