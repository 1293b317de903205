"""tilecraft's logs through `torch._logging`, as Inductor's: one log and four artifacts.

- `TORCH_LOGS="+tilecraft"`: everything (the `tilecraft` log at DEBUG, all four artifacts).
- one artifact: `torch._logging.set_logs(tilecraft_kernels=True)` in Python, or `TILECRAFT_LOGS=kernels,configs`
  in the environment (TORCH_LOGS cannot name them: torch parses it on import, before any plugin registers).

| artifact | what |
| --- | --- |
| `tilecraft_graphs` | the IR after each pass that changed it |
| `tilecraft_fusion` | the fused groups and the rule behind each merge |
| `tilecraft_kernels` | the Triton source of each kernel |
| `tilecraft_configs` | each kernel's launch config and where it came from (database, bucket, tuned now, default) |
"""
from __future__ import annotations

import logging
import os

from torch._logging import _internal as _tl

ARTIFACTS = {
    "tilecraft_graphs": "tilecraft: the IR after each pass that changed it",
    "tilecraft_fusion": "tilecraft: fused groups and the fusion rule of each merge",
    "tilecraft_kernels": "tilecraft: the Triton source of each generated kernel",
    "tilecraft_configs": "tilecraft: each kernel's launch config and its source (tuned or default)",
}

if "tilecraft" not in _tl.log_registry.log_alias_to_log_qnames:
    _tl.register_log("tilecraft", "tilecraft")
for _name, _desc in ARTIFACTS.items():
    if _name not in _tl.log_registry.artifact_names:
        _tl.register_artifact(_name, _desc, visible=True)


def _from_env() -> None:
    """TILECRAFT_LOGS=graphs,fusion,kernels,configs (or their full names) turns those artifacts on."""
    names = [n.strip() for n in os.environ.get("TILECRAFT_LOGS", "").split(",") if n.strip()]
    if not names:
        return
    full = [n if n.startswith("tilecraft_") else f"tilecraft_{n}" for n in names]
    unknown = [n for n in full if n not in ARTIFACTS]
    if unknown:
        raise ValueError(f"TILECRAFT_LOGS names unknown artifact(s) {unknown}; known: {sorted(ARTIFACTS)}")
    _tl._init_logs()  # handlers for the now registered `tilecraft` log (keeps what TORCH_LOGS asked for)
    for n in full:
        _tl.log_state.enable_artifact(n)


_from_env()
graphs_log = _tl.getArtifactLogger("tilecraft", "tilecraft_graphs")
fusion_log = _tl.getArtifactLogger("tilecraft", "tilecraft_fusion")
kernels_log = _tl.getArtifactLogger("tilecraft", "tilecraft_kernels")
configs_log = _tl.getArtifactLogger("tilecraft", "tilecraft_configs")
log = logging.getLogger("tilecraft")


def describe_error(e: BaseException) -> str:
    """`Type: first line of the message`, for one-line warnings about a kernel or a capture that failed."""
    text = str(e)
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
