#!/usr/bin/env bash
# The eighth session's device call (2026-12-03): gpu_check (the quantized decode check included), LLaMA b1x16
# bf16/int8/int4 with RoPE in the q/k/v GEMM (the default) and int4 without it (TILECRAFT_ROPE_GEMM=0, its own
# process: the ratio to bf16 is taken within each run), then the int4 step's kernels.
#   bash bench/session_h.sh OUTDIR            (device machine, repo root; carry [".whl"])
set -uo pipefail
out=${1:-${OUT:-bench/results}}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/xgboost*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 TILECRAFT_CACHE=/tmp/tilecraft-cache
run() { local name=$1 secs=$2; shift 2; echo "=== $(date +%T) $name"; timeout "$secs" "$@" > "$out/$name.log" 2>&1
        echo "=== $name exit $?"; grep -v "Warning\|warn(\|^  " "$out/$name.log" | tail -${TAIL:-4}; }
run check "${CHECK_S:-130}" python3 bench/gpu_check.py --out "$out/gpu_check.json"
TAIL=6 run b1 "${B1_S:-170}" python3 bench/models.py --models llama_b1 --backends tilecraft --quant int8,int4 \
  --out "$out/b1.json"
TAIL=6 TILECRAFT_ROPE_GEMM=0 run b1_norope "${NOROPE_S:-130}" python3 bench/models.py --models llama_b1 \
  --backends tilecraft --quant int4 --out "$out/b1_norope.json"
TAIL=3 run step "${STEP_S:-80}" python3 bench/step_kernels.py --quant int4 --out "$out/step_int4.json"
grep -v "^ \+[0-9]" "$out/step.log" | tail -2; grep "qmatmul\|attention\|pointwise" "$out/step.log" | head -8
