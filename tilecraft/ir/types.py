"""Tensor types of the IR: shape, dtype, strides and device of a value."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (block sizes)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    return dense_strides(shape, range(len(shape)))


def dense_strides(shape: tuple[int, ...], order) -> tuple[int, ...]:
    """Strides of a dense tensor of `shape` whose dims lie in memory in `order` (outermost first)."""
    strides, acc = [0] * len(shape), 1
    for d in reversed(list(order)):
        strides[d] = acc
        acc *= max(shape[d], 1)
    return tuple(strides)


def dense_order(t: "TensorType") -> list[int] | None:
    """The dims of t from outermost to innermost when t is dense in a permuted (not row-major) order, else None."""
    if t.rank < 2 or t.is_contiguous:
        return None
    order = sorted(range(t.rank), key=lambda d: (-t.strides[d], d))
    return order if all(a == b for a, b, n in zip(t.strides, dense_strides(t.shape, order), t.shape) if n != 1) \
        else None


@dataclass(frozen=True)
class TensorType:
    """The static type of a tensor value. Strides are in elements; None means contiguous."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    strides: tuple[int, ...] | None = None
    device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.strides is None:
            object.__setattr__(self, "strides", contiguous_strides(self.shape))
        else:
            object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.strides) != len(self.shape):
            raise ValueError(f"strides {self.strides} do not match shape {self.shape}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def is_contiguous(self) -> bool:
        c = self.__dict__.get("_contiguous")  # worked out once per type (codegen and printing ask a lot)
        if c is None:
            c = all(s == c for s, c, n in zip(self.strides, contiguous_strides(self.shape), self.shape) if n != 1)
            object.__setattr__(self, "_contiguous", c)
        return c

    @property
    def itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def with_shape(self, shape, dtype=None) -> "TensorType":
        return TensorType(tuple(shape), dtype or self.dtype, None, self.device)

    @staticmethod
    def of(t: torch.Tensor) -> "TensorType":
        return TensorType(tuple(t.shape), t.dtype, tuple(t.stride()), t.device.type)

    def meta(self) -> torch.Tensor:
        """A meta tensor of this type (for shape inference by torch)."""
        return torch.empty_strided(self.shape, self.strides, dtype=self.dtype, device="meta")

    def __str__(self) -> str:
        s = self.__dict__.get("_str")  # formatted once per type: the pass trace prints the graph after each pass
        if s is None:
            dt = str(self.dtype).replace("torch.", "")
            s = f"{dt}[{','.join(map(str, self.shape))}]"
            if not self.is_contiguous:
                s += f"{{{','.join(map(str, self.strides))}}}"
            object.__setattr__(self, "_str", s)
        return s
