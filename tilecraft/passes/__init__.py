"""Graph-to-graph passes and the pass manager."""
from .cleanup import canonicalize, cse, dce
from .manager import PassTrace, run_passes


def default_passes(options=None) -> list:
    """The standard pipeline, in order."""
    return [("canonicalize", canonicalize), ("cse", cse), ("dce", dce)]


__all__ = ["canonicalize", "cse", "dce", "run_passes", "PassTrace", "default_passes"]
