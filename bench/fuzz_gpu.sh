#!/usr/bin/env bash
# The issue-14 GPU fuzzing run (device machine, repo root). Two device calls of < 10 minutes each:
#   bash bench/fuzz_gpu.sh OUTDIR campaign                    (~8 min)
#   bash bench/fuzz_gpu.sh OUTDIR big planted regressions     (~8 min)
# campaign: up to ${MODELS:-3000} models (fp32 / fp16 / bf16 mixed) on CUDA, ${JOBS:-15} worker processes,
#   capped at ${TIME:-420s}; big: ${BIG:-4} models past 2^31 elements; planted: the planted-bug suite (time-to-find
#   per fault, ${PLANT_S:-25}s of models each, plus reduction); regressions: issue-14 regression tests on CUDA.
# Everything (cases.jsonl, summary.json/.txt, failures/, big.json, planted.json, logs) lands in OUTDIR.
set -uo pipefail
out=${1:-bench/results/fuzz-gpu}; shift || true
parts=${*:-campaign big planted regressions}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TILECRAFT_CACHE=${TILECRAFT_CACHE:-/tmp/tilecraft-cache}
nvidia-smi --query-gpu=name --format=csv,noheader
for part in $parts; do
  echo "=== $part"
  case $part in
    campaign) timeout -s INT 540 python3 -m tilecraft.cli fuzz --device cuda --jobs "${JOBS:-15}" --time "${TIME:-420s}" \
        --max-models "${MODELS:-3000}" --seed "${SEED:-14}" --reduce-seconds 20 --out "$out/campaign" \
        --no-progress > "$out/campaign.log" 2>&1
      echo "campaign exit status $? (0: every model matched in generated kernels)"
      grep -E "^(models tried|outcomes|by dtype|unique failures|  \[|wall time)" "$out/campaign.log" | head -40 ;;
    big) timeout 150 python3 -m tilecraft.cli fuzz --device cuda --max-models 0 --big "${BIG:-4}" --out "$out/big" \
        --no-progress > "$out/big.log" 2>&1; echo "big exit status $?"; grep "^big " "$out/big.log" ;;
    planted) timeout 330 python3 bench/fuzz_planted.py --device cuda --budget-s "${PLANT_S:-25}" --out "$out/planted" \
        2>&1 | tee "$out/planted.log" | tail -9 ;;
    regressions) TRITON_INTERPRET=0 timeout 150 python3 -m pytest -q -p no:cacheprovider -k cuda \
        tests/fuzz/test_issue14_fixes.py 2>&1 | tail -15 | tee "$out/regressions.log" ;;
    *) echo "unknown part $part" ;;
  esac
done
exit 0
