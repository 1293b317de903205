#!/usr/bin/env bash
# One device call for the CUTLASS mixed-input GEMM (issue 15's b4x512): build and time its variants at M=2048
# (bench/cutlass_mixed.py), then the quantized LLaMA b4x512 step with each scheme's best variant on
# (TILECRAFT_QMATMUL_CUTLASS). Usage (device machine, repo root, carry [".whl"] with xgboost and nvidia-cutlass):
#   bash bench/cutlass_models.sh OUTDIR [variants]
set -uo pipefail
out=${1:-bench/results}; variants=${2:-c128,c256,c256x2,pp,i8epi,i8epi256}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD TILECRAFT_CACHE=${TILECRAFT_CACHE:-/tmp/tilecraft-cache} PYTHONUNBUFFERED=1
timeout "${CUTLASS_S:-300}" python3 bench/cutlass_mixed.py --variants "$variants" --out "$out/cutlass.json" \
  > "$out/cutlass.log" 2>&1
grep -v "Warn\|warn" "$out/cutlass.log" | tail -30
for scheme in int8 int4; do
  v=$(python3 -c "import json,sys; b=json.load(open('$out/cutlass.json'))['best']; print(b['${scheme}_weight_only']['variant'])" 2>/dev/null)
  [ -z "$v" ] && continue
  echo "=== llama_b4 $scheme with TILECRAFT_QMATMUL_CUTLASS=$v"
  TILECRAFT_QMATMUL_CUTLASS=$v timeout "${MODELS_S:-100}" python3 bench/models.py --models llama_b4 --backends tilecraft \
    --quant "$scheme" --out "$out/models_$scheme.json" 2>&1 | grep -v "Warn\|warn" | tail -9
done
exit 0
