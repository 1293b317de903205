"""What the tuner knows about a device: limits for pruning configs, and properties the cost model sees."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """Properties of one accelerator. `name` + `capability` key schedules; the rest feeds features and pruning."""

    name: str
    capability: tuple[int, int]  # CUDA compute capability (major, minor); (0, 0) for the CPU interpreter
    sm_count: int
    l2_bytes: int
    smem_per_block: int  # opt-in shared memory per block, bytes
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    bandwidth_gbps: float = 1000.0  # measured/achievable DRAM bandwidth, GB/s
    peak_tflops: float = 100.0  # dense fp16/bf16 matrix rate, TFLOP/s

    @property
    def capability_str(self) -> str:
        return f"{self.capability[0]}.{self.capability[1]}"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["capability"] = list(self.capability)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceInfo":
        d = dict(d)
        d["capability"] = tuple(d["capability"])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def detect(cls, device: int | str | None = None) -> "DeviceInfo":
        """Read the current CUDA device's properties; the CPU-interpreter preset when there is no GPU."""
        import torch

        if not torch.cuda.is_available():
            return PRESETS["cpu-interpreter"]
        idx = torch.device(device if device is not None else "cuda").index or 0
        p = torch.cuda.get_device_properties(idx)
        preset = next((v for k, v in PRESETS.items() if k != "cpu-interpreter" and k in p.name), None)
        smem = getattr(p, "shared_memory_per_block_optin", 0) or (preset.smem_per_block if preset else 49152)
        l2 = getattr(p, "L2_cache_size", 0) or (preset.l2_bytes if preset else 4 << 20)
        return cls(name=p.name, capability=(p.major, p.minor), sm_count=p.multi_processor_count, l2_bytes=l2,
                   smem_per_block=smem, regs_per_sm=getattr(p, "regs_per_multiprocessor", 65536) or 65536,
                   max_threads_per_sm=getattr(p, "max_threads_per_multi_processor", 2048) or 2048,
                   bandwidth_gbps=preset.bandwidth_gbps if preset else 1000.0,
                   peak_tflops=preset.peak_tflops if preset else 100.0)


def lookup(name_or_dict: str | dict | DeviceInfo) -> DeviceInfo:
    """A DeviceInfo from a preset name (or a substring of a GPU name), a dict, or a DeviceInfo."""
    if isinstance(name_or_dict, DeviceInfo):
        return name_or_dict
    if isinstance(name_or_dict, dict):
        return DeviceInfo.from_dict(name_or_dict)
    if name_or_dict in PRESETS:
        return PRESETS[name_or_dict]
    for k, v in PRESETS.items():
        if k in name_or_dict:
            return dataclasses.replace(v, name=name_or_dict)
    raise KeyError(f"unknown device {name_or_dict!r}: give a dict of DeviceInfo fields or one of {sorted(PRESETS)}")


PRESETS: dict[str, DeviceInfo] = {
    # H100 SXM 80GB HBM3: 132 SMs, 50 MB L2, 227 KB opt-in smem/block; 3.0 TB/s and ~700 TFLOP/s bf16 as
    # measured in shared/ANCHORS.md (not the datasheet's 3.35 TB/s / 989 TFLOP/s).
    "H100": DeviceInfo("NVIDIA H100 80GB HBM3", (9, 0), 132, 50 * 1024 * 1024, 232448, 65536, 2048, 3000.0, 700.0),
    # H200 (141 GB HBM3e): the H100's GH100 die (132 SMs, 50 MB L2, 227 KB smem/block) with 4.8 TB/s on the
    # datasheet; bandwidth assumed at the H100's measured/datasheet ratio (0.9) until measured here.
    "H200": DeviceInfo("NVIDIA H200", (9, 0), 132, 50 * 1024 * 1024, 232448, 65536, 2048, 4300.0, 700.0),
    "A100": DeviceInfo("NVIDIA A100-SXM4-80GB", (8, 0), 108, 40 * 1024 * 1024, 166912, 65536, 2048, 1800.0, 280.0),
    # Triton's interpreter on the CPU: no real limits, but pruning uses H100-like limits so that the spaces
    # tested on CPU are the ones tuned on the GPU. Timings on it are meaningless (use SimulatedMeasurer).
    "cpu-interpreter": DeviceInfo("cpu-interpreter", (0, 0), 132, 50 * 1024 * 1024, 232448, 65536, 2048,
                                  50.0, 1.0),
}
