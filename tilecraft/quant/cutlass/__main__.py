"""Build the CUTLASS mixed-input GEMM's libraries ahead of time (else the first quantized prefill matmul builds
its scheme's, ~1.5-2 minutes each): `python -m tilecraft.quant.cutlass [VARIANT ...]` (default: the variant each
scheme uses, SCHEME_VARIANTS), in parallel. Exit 0 when all built, 1 when one failed, 2 when nothing can be built
here (no nvcc or CUTLASS headers) or a name is not a variant."""
from __future__ import annotations

import sys

from . import SCHEME_VARIANTS, CutlassError, _tools, build_many


def main(argv: list[str] | None = None) -> int:
    names = list(dict.fromkeys(sys.argv[1:] if argv is None else argv)) or list(dict.fromkeys(SCHEME_VARIANTS.values()))
    try:
        _tools()
        results = build_many(names)  # (an unknown variant name fails here, before anything compiles)
    except CutlassError as e:
        print(f"tilecraft: {e}", file=sys.stderr)
        return 2
    failed = 0
    for name, r in results.items():
        if r.error:
            failed += 1
            print(f"{name}: failed after {r.seconds:.0f}s: {r.error.splitlines()[0]}", file=sys.stderr)
        else:
            print(f"{name}: {r.path} ({r.seconds:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
