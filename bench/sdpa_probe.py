"""Which layout F.scaled_dot_product_attention returns on this GPU for q/k/v laid out [b, t, h, d] (HF's
`view(b, t, h, d).transpose(1, 2)`), per backend and for the ATen variants; and what a reshape of it back to
[b, t, h*d] costs (a copy when the layout is [b, h, t, d]).  python bench/sdpa_probe.py"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

b, t, h, d = 16, 256, 12, 64
q, k, v = (torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
print("q strides", q.stride())
print("default:", F.scaled_dot_product_attention(q, k, v).stride())
for be in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
    try:
        with sdpa_kernel(be):
            print(be, F.scaled_dot_product_attention(q, k, v).stride())
    except Exception as e:  # noqa: BLE001
        print(be, "refused:", str(e)[:100])
from torch.profiler import ProfilerActivity, profile  # noqa: E402
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    F.scaled_dot_product_attention(q, k, v)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=5))
