"""Triton code generation: one kernel per fused group, from templates; the on-disk kernel cache."""
