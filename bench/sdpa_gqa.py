"""GQA attention on the GPU: what repeat_kv's copies cost next to SDPA, and whether SDPA's own GQA support
(`enable_gqa=True`, k/v not expanded) is faster. LLaMA-style shapes (16 q heads, 4 kv heads, head dim 128), bf16,
causal. GPU time per call by the torch profiler (sum of kernel times), median of a few rounds.

    python bench/sdpa_gqa.py [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from tilecraft.testing import gpu_profile

    rows = []
    for b, t in ((4, 512), (1, 16)):
        hq, hkv, d = 16, 4, 128
        q = torch.randn(b, hq, t, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16)

        def expand(x):
            return x[:, :, None].expand(b, hkv, hq // hkv, t, d).reshape(b, hq, t, d)

        ref = F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=True)
        cases = {
            "expand copies only": lambda: (expand(k), expand(v)),
            "expanded k/v + sdpa": lambda: F.scaled_dot_product_attention(q, expand(k), expand(v), is_causal=True),
            "sdpa enable_gqa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        }
        for name, fn in cases.items():
            try:
                out = fn()
                err = None if isinstance(out, tuple) else float((out.float() - ref.float()).abs().max())
                prof = gpu_profile(fn, n=20)
                rows.append({"shape": f"b{b}x{t}", "case": name, "gpu_us": round(sum(r[1] for r in prof), 1),
                             "max_err": err, "kernels": [(k_[:90], round(us, 1)) for k_, us in prof[:3]]})
            except Exception as e:  # a backend without GQA support says so here
                rows.append({"shape": f"b{b}x{t}", "case": name, "error": f"{type(e).__name__}: {e}"[:200]})
    for r in rows:
        print(json.dumps(r))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
