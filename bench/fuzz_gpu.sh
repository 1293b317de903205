#!/usr/bin/env bash
# The issue-14 GPU fuzzing run (device machine, repo root), about 8 minutes on one H200:
#   bash bench/fuzz_gpu.sh [OUTDIR]
# 1. a campaign of up to ${MODELS:-3000} models (fp32 / fp16 / bf16 mixed) on CUDA with ${JOBS:-15} worker
#    processes, capped at ${TIME:-330s}; 2. ${BIG:-4} models past 2^31 elements; 3. the planted-bug suite
#    (time-to-find per fault, ${PLANT_S:-40}s each); 4. the issue-14 regression tests on CUDA.
# Everything (cases.jsonl, summary.json/.txt, failures/, big.json, planted.json, logs) lands in OUTDIR.
set -uo pipefail
out=${1:-bench/results/fuzz-gpu-$(date -u +%Y%m%d-%H%M)}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TILECRAFT_CACHE=${TILECRAFT_CACHE:-/tmp/tilecraft-cache}
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m tilecraft.cli fuzz --device cuda --jobs "${JOBS:-15}" --time "${TIME:-330s}" --max-models "${MODELS:-3000}" \
  --seed "${SEED:-14}" --out "$out/campaign" --no-progress > "$out/campaign.log" 2>&1
echo "campaign exit status $? (0: every model matched in generated kernels)"; head -4 "$out/campaign.log"
timeout 90 python3 -m tilecraft.cli fuzz --device cuda --max-models 0 --big "${BIG:-4}" --out "$out/big" \
  --no-progress > "$out/big.log" 2>&1; echo "big exit status $?"; grep "^big " "$out/big.log"
timeout 360 python3 bench/fuzz_planted.py --device cuda --budget-s "${PLANT_S:-40}" --out "$out/planted" 2>&1 \
  | tee "$out/planted.log" | tail -8
timeout 120 python3 -m pytest -q -x tests/fuzz/test_issue14_fixes.py 2>&1 | tail -3 | tee "$out/regressions.log"
exit 0
