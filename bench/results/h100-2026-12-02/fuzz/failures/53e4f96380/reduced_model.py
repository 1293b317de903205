"""a tilecraft.fuzz model

Standalone: needs only torch. 3 ops, 1 inputs."""
import torch
import torch.nn.functional as F

INPUT_TYPES = [
    ((2, 2), torch.float32),
]


class FuzzModel(torch.nn.Module):
    def forward(self, x0):
        v1 = torch.sum(x0, dim=[1], keepdim=False)  # sum: float32[2]
        v2 = torch.sub(x0, v1)  # sub: float32[2,2]
        v3 = v2.unsqueeze(0)  # unsqueeze: float32[1,2,2]
        return (v3,)

def build_inputs(types, seed=0, scale=1.0, positive=False, device="cpu"):
    """Seeded inputs for [(shape, dtype, layout)]: normal(0, scale) drawn in float64 on the CPU (|x| * scale + 0.1
    when positive), then cast; bools are x > 0, integers round(4x). layout None is contiguous, ("perm", order)
    is a permuted tensor (dim order[0] outermost in memory), ("step", k) every k-th element of a k-times
    longer last dim. Built on the CPU, moved to `device` as a whole, then viewed, so strides are the same there."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape, dtype, *layout in types:
        layout = layout[0] if layout else None
        full = list(shape)
        if layout and layout[0] == "perm":
            full = [shape[d] for d in layout[1]]
        elif layout and layout[0] == "step":
            full[-1] *= layout[1]
        t = torch.randn(full, generator=g, dtype=torch.float64)
        if dtype == torch.bool:
            t = t > 0
        else:
            t = t * scale
            if positive:
                t = t.abs() + 0.1
            if not dtype.is_floating_point:
                t = (t * 4).round()
        t = t.to(dtype).to(device)
        if layout and layout[0] == "perm":
            t = t.permute([layout[1].index(d) for d in range(len(shape))])
        elif layout and layout[0] == "step":
            t = t[..., ::layout[1]]
        out.append(t)
    return out


def make_inputs(seed=0, scale=1.0, positive=False, device="cpu"):
    return build_inputs(INPUT_TYPES, seed, scale, positive, device)
