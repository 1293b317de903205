"""Graph-to-graph passes and the pass manager."""
from .attention import fuse_attention
from .cleanup import canonicalize, cse, dce
from .conv import fold_batchnorm
from .layout import channels_last, follow_input_layouts, materialize_reshapes, pad_matmuls, sink_views
from .manager import PassTrace, run_passes
from .quantize import fold_dequant_matmul, fold_rms_norm, fuse_rope_qlinear, merge_sibling_qlinears


def default_passes(options=None) -> list:
    """The standard pipeline, in order."""
    cl = getattr(options, "channels_last", None)
    return [("canonicalize", canonicalize), ("fold_dequant_matmul", fold_dequant_matmul),
            ("merge_sibling_qlinears", merge_sibling_qlinears), ("fold_rms_norm", fold_rms_norm),
            ("fuse_rope_qlinear", fuse_rope_qlinear),
            ("fold_batchnorm", fold_batchnorm), ("sink_views", sink_views),
            ("follow_input_layouts", follow_input_layouts), ("fuse_attention", fuse_attention),
            ("materialize_reshapes", materialize_reshapes), ("pad_matmuls", pad_matmuls),
            ("channels_last", lambda g: channels_last(g, cl)), ("cse", cse), ("dce", dce)]


__all__ = ["canonicalize", "cse", "dce", "fold_batchnorm", "fold_dequant_matmul", "merge_sibling_qlinears", "fold_rms_norm", "fuse_rope_qlinear", "sink_views", "fuse_attention", "pad_matmuls", "follow_input_layouts", "materialize_reshapes", "channels_last", "run_passes", "PassTrace", "default_passes"]
