#!/usr/bin/env bash
# Set up, then run the whole test suite (CPU; Triton kernels run through the interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TRITON_INTERPRET=1
python3 -m pytest -q -p no:cacheprovider --timeout=900 "$@"
