import sys, torch
sys.path.insert(0, "bench")
from tilecraft.codegen.matmul import stacked_alias, _elapsed_ms
from tilecraft.testing import gpu_profile
for M in (16, 4096):
    d, h = 2048, 5632
    g = torch.nn.Linear(d, h, bias=False).cuda().bfloat16(); u = torch.nn.Linear(d, h, bias=False).cuda().bfloat16()
    x = torch.randn(M, d, device="cuda", dtype=torch.bfloat16)
    bs = [g.weight.t(), u.weight.t()]
    order, view = stacked_alias(bs)
    print("ptr gap", (u.weight.data_ptr() - g.weight.data_ptr()) // 2, "N*K", h * d, view.stride())
    st = torch.stack([g.weight, u.weight]).transpose(1, 2)
    fns = {"sep": lambda: [torch.mm(x, b) for b in bs], "alias": lambda: torch.bmm(x.expand(2, M, d), view),
           "stacked": lambda: torch.bmm(x.expand(2, M, d), st)}
    for k, f in fns.items():
        f(); torch.cuda.synchronize()
        rows = gpu_profile(f, 10)
        ev = sorted(_elapsed_ms(f, x.device) for _ in range(5))[2]
        print(M, k, f"events {ev*1e3:.1f} us", [(n[:60], round(us, 1)) for n, us in rows])
