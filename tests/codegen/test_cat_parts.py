"""cat in generated kernels: each input is computed under a mask of its own part of the joined dim, so its loads
are contiguous (not clamped into bounds) and elements of other parts load nothing; results match eager, in a
pointwise kernel, a nested cat (rotate_half), a part that broadcasts and a reduction of a cat."""
import re

import torch

from tilecraft.testing import compile_and_check, randn


def _cat_loads_unclamped(kernels):
    src = "\n".join(k.source for k in kernels)
    assert "part_mask" in src and "tl.minimum(tl.maximum(" not in src, src
    return src


def test_partial_rope_cat_matches_eager_with_masked_parts():
    """GPT-NeoX-style partial RoPE on a slice of a wider tensor: cat([rot * cos + rotate_half(rot) * sin, pass])."""
    def rope(qkv, cos, sin):
        q = qkv.view(2, 8, 2, 48).transpose(1, 2)[..., :16]
        rot, rest = q[..., :4], q[..., 4:]
        half = torch.cat((-rot[..., 2:], rot[..., :2]), dim=-1)
        return torch.cat((rot * cos + half * sin, rest), dim=-1) * 1.0

    args = (randn(16, 96, seed=0), randn(1, 1, 8, 4, seed=1), randn(1, 1, 8, 4, seed=2))
    src = _cat_loads_unclamped(compile_and_check(rope, *args, n_kernels=1))
    # the pass-through part loads at `base + i - 4` under `i >= 4`: one load per element, no clamped edge loads
    assert len(re.findall(r"tl\.load\(in0_ptr", src)) == 4, src


def test_cat_of_three_parts_with_broadcast_and_reduction_matches_eager():
    def f(x, y, z):
        c = torch.cat((x.sin(), y.expand(4, 3), z * 2), dim=1)  # parts of 5, 3 and 6 columns
        return c.sum(dim=1), torch.cat((c, -c[:, :2]), dim=1).exp()

    args = (randn(4, 5, seed=0), randn(1, 3, seed=1), randn(4, 6, seed=2))
    _cat_loads_unclamped(compile_and_check(f, *args))
    args16 = tuple(a.to(torch.bfloat16) for a in args)
    _cat_loads_unclamped(compile_and_check(f, *args16))
