"""The device a tuning bench runs for (bench/tune_gemm.py, bench/tune_model.py): a --dry-run on CPU (the Triton
interpreter, switched on here before Triton loads) or this GPU."""
import os


def tuning_device(dry: bool):
    """The `DeviceInfo` of this GPU, or of the "cpu-interpreter" preset for a dry run; None after saying why
    when there is no GPU and no dry run."""
    if dry:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from tilecraft.tuner.device import PRESETS, DeviceInfo

    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on CPU")
        return None
    return PRESETS["cpu-interpreter"] if dry else DeviceInfo.detect()
