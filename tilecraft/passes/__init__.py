"""Graph-to-graph passes and the pass manager."""
from .cleanup import canonicalize, cse, dce
from .conv import fold_batchnorm
from .layout import sink_views
from .manager import PassTrace, run_passes


def default_passes(options=None) -> list:
    """The standard pipeline, in order."""
    return [("canonicalize", canonicalize), ("fold_batchnorm", fold_batchnorm), ("sink_views", sink_views),
            ("cse", cse), ("dce", dce)]


__all__ = ["canonicalize", "cse", "dce", "fold_batchnorm", "sink_views", "run_passes", "PassTrace", "default_passes"]
