#!/usr/bin/env bash
# Every GPU benchmark in one device call. Usage (on the device machine, repo root; .whl carried):
#   bash bench/run_gpu.sh [OUTDIR]
set -uo pipefail
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
run() { echo "=== $*"; timeout "${BUDGET:-170}" python3 "$@" 2>&1 | grep -v Warning | tee -a "$out/log.txt" | tail -25; }
run bench/anchors.py --out "$out/anchors.json"
run bench/quant_linear.py --budget-s 90 --out "$out/quant_linear.json"
run bench/tune_gemm.py --quick --out "$out/tune_gemm.json"
[ -f bench/tune_model.py ] && run bench/tune_model.py --quick --out "$out/tune_model.json"
exit 0
