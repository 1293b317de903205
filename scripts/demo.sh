#!/usr/bin/env bash
# Set up, then compile a small transformer block, check it against eager, and print what was compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m tilecraft.cli demo "$@"
