"""Attention at decode sizes, per torch SDPA backend: LLaMA-492M's b1x16 step (16 query heads, 4 k/v heads of
128, 16 tokens, causal) spends ~6 us per layer in cuDNN's kernel (plus a memset); is another backend, or the
plain math (bmm, softmax, bmm), or tilecraft's few-token kernel (codegen/small_attention.py, the default since
the 2026-12-03 fifth session; TILECRAFT_SMALL_ATTN=0 turns it off), faster at such sizes? GPU µs per call: the
sum of its kernels' times (torch profiler, `tilecraft.testing.gpu_profile`, 50 calls), each output checked against
the math backend's. GPU only.
(Its first version timed 200 calls by CUDA events behind a GPU sleep: at these sizes the host's ~25-50 us per
call outran the sleep, so those numbers, bench/results/h200-2026-12-03d/call6, are host time.)

    python bench/sdpa_small_t.py [--out bench/results/sdpa_small_t.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from tilecraft.codegen.small_attention import small_attention  # noqa: E402
from tilecraft.testing import gpu_profile  # noqa: E402

# (batch, query heads, k/v heads, tokens, head dim)
SHAPES = [(1, 16, 4, 16, 128), (1, 16, 4, 64, 128), (4, 16, 4, 16, 128), (1, 32, 8, 16, 128)]
BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/sdpa_small_t.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("sdpa_small_t: needs a CUDA GPU; nothing to do here", file=sys.stderr)
        return 2
    rows = []
    for b, hq, hkv, t, d in SHAPES:
        # HF's layout: [b, t, h, d] memory viewed as [b, h, t, d]
        q = torch.randn(b, t, hq, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        k, v = (torch.randn(b, t, hkv, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(2))
        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
        row = {"shape": [b, hq, hkv, t, d]}
        for name, be in BACKENDS.items():
            for gqa in (True, False):
                kk, vv = (k, v) if gqa else (x.repeat_interleave(hq // hkv, 1) for x in (k, v))

                def call(kk=kk, vv=vv, gqa=gqa, be=be):
                    with sdpa_kernel(be):
                        return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)
                try:
                    err = float((call().float() - ref).abs().max())
                    kernels = gpu_profile(call, n=50)
                    us = sum(t for _, t in kernels)
                except Exception as e:  # noqa: BLE001 - a backend that refuses the shape
                    row[f"{name}{'' if gqa else '_expanded'}"] = f"refused: {str(e)[:60]}"
                    continue
                row[f"{name}{'' if gqa else '_expanded'}"] = {"us": us, "max_err": err,
                                                             "kernels": [(k[:80], t) for k, t in kernels]}
        out = torch.empty_like(q)  # tilecraft's few-token kernel (codegen/small_attention.py), grouped k/v
        call = lambda out=out, k=k, v=v: small_attention(q, k, v, True, None, out)  # noqa: E731
        kernels = gpu_profile(call, n=50)
        row["tilecraft"] = {"us": sum(t for _, t in kernels), "max_err": float((call().float() - ref).abs().max()),
                            "kernels": [(n[:80], t) for n, t in kernels]}
        # as HF's traced models call it: an explicit [1, 1, t, t] bool causal mask, is_causal off
        mask = torch.ones(t, t, dtype=torch.bool, device="cuda").tril()[None, None]
        for name, fn in (("cudnn_mask", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                               enable_gqa=True)),
                         ("tilecraft_mask", lambda out=out: small_attention(q, k, v, False, None, out, mask))):
            def masked(fn=fn, name=name):
                if name.startswith("cudnn"):
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return fn()
                return fn()
            try:
                err = float((masked().float() - ref).abs().max())
                kernels = gpu_profile(masked, n=50)
            except Exception as e:  # noqa: BLE001 - a backend that refuses the mask
                row[name] = f"refused: {str(e)[:60]}"
                continue
            row[name] = {"us": sum(t for _, t in kernels), "max_err": err, "kernels": [(n[:80], t) for n, t in kernels]}
        rows.append(row)
        print(row, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print("\nGPU kernel us per call (causal, bf16; gqa: grouped k/v, exp: k/v repeated to the query heads; mask: "
          "an explicit bool causal mask, as HF's traced models pass)")
    names = [f"{n}{s}" for n in BACKENDS for s in ("", "_expanded")] + ["tilecraft", "cudnn_mask", "tilecraft_mask"]
    print(f"{'b,hq,hkv,t,d':>18} " + " ".join(f"{n.replace('_expanded', ' exp'):>12}" for n in names))
    for r in rows:
        cells = [f"{r[n]['us']:12.1f}" if isinstance(r.get(n), dict) else f"{'-':>12}" for n in names]
        print(f"{','.join(map(str, r['shape'])):>18} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
