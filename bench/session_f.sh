#!/usr/bin/env bash
# The sixth session's last device call (2026-12-03): the seven models against Inductor, LLaMA b1x16 quantized,
# gpu_check and a short GPU fuzz campaign, each under its own limit (one_call.sh's steps, without the b4x512
# CUTLASS build: those rows do not change with this session's decode-size passes).
#   bash bench/session_f.sh OUTDIR            (device machine, repo root; carry [".whl"])
set -uo pipefail
dest=${1:-${OUT:-bench/results}}
out=/tmp/sf
mkdir -p "$out" "$dest"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 TILECRAFT_CACHE=/tmp/tilecraft-cache
run() { local name=$1 secs=$2; shift 2; echo "=== $(date +%T) $name"; timeout "$secs" "$@" > "$out/$name.log" 2>&1
        echo "=== $name exit $?"; grep -v "Warning\|warn(\|^  " "$out/$name.log" | tail -4; }
run models "${MODELS_S:-300}" python3 bench/models.py --budget-s $(( ${MODELS_S:-300} - 40 )) --out "$out/models.json"
run quant "${QUANT_S:-60}" python3 bench/models.py --models llama_b1 --backends none --quant int8,int4 \
  --out "$out/models_quant.json"
run check "${CHECK_S:-60}" python3 bench/gpu_check.py --out "$out/gpu_check.json"
run fuzz "${FUZZ_S:-60}" python3 -m tilecraft fuzz --device cuda --jobs 8 --time "$(( ${FUZZ_S:-60} - 35 ))s" --seed 15 \
  --reduce-seconds 5 --no-progress --out "$out/fuzz"
python3 bench/models.py --table "$out/models.json" "$out/models_quant.json" 2>&1 | tail -32
tar czf "$dest/sf.tgz" -C /tmp sf
