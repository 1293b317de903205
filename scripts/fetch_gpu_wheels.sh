#!/usr/bin/env bash
# Fetch what the GPU machine lacks (xgboost, for the tuner's cost model; nvidia-cutlass's C++ headers, for the
# opt-in CUTLASS mixed-input GEMM, bench/cutlass_mixed.py) into .whl/, which the device tool
# carries: run here, then on the device machine `bash bench/run_gpu.sh` with carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' "$(git rev-parse --git-dir)/info/exclude" 2>/dev/null || echo /.whl/ >> "$(git rev-parse --git-dir)/info/exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl xgboost-cpu==3.2.0
python3 -m pip download -q --no-deps -d .whl nvidia-cutlass==4.2.0.0
ls -la .whl
