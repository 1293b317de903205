#!/usr/bin/env bash
# The GPU benchmarks, in as few device calls as they fit. Usage (on the device machine, repo root; .whl carried):
#   bash bench/run_gpu.sh OUTDIR [anchors] [quant] [gemm] [model] [models] [backends] [launch]   (none named: the first four)
# Each part runs under `timeout ${BUDGET:-170}`; logs and JSON land in OUTDIR. `models` (bench/models.py, whole HF
# models; ~8 min for all) runs under `timeout ${MODELS_S:-560}`, starts no model after ${MODELS_BUDGET:-420} s and
# takes MODELS_ARGS (e.g. "--models gpt2,llama_b4 --quant int8,int4"); give it its own device call. `backends`
# (bench/gemm_backends.py) runs under `timeout ${BACKENDS_S:-280}`, `quant` (bench/quant_linear.py --quick, ~3-4 min)
# under `timeout ${QUANT_S:-420}` with QUANT_ARGS.
set -uo pipefail
out=${1:-${OUT:-bench/results}}; shift || true
parts=${*:-anchors quant gemm model}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 TILECRAFT_CACHE=${TILECRAFT_CACHE:-/tmp/tilecraft-cache}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
run() { echo "=== $*"; timeout "${BUDGET:-170}" python3 "$@" 2>&1 | tee -a "$out/log.txt" | grep -v "UserWarning\|warnings.warn" | tail -"${TAIL:-40}"; }
for part in $parts; do
  case $part in
    anchors) run bench/anchors.py --out "$out/anchors.json" ${ANCHORS_ARGS:-} ;;
    quant) BUDGET=${QUANT_S:-420} TAIL=60 run bench/quant_linear.py ${QUANT_ARGS:---quick} --out "$out/quant_linear.json" ;;
    gemm) run bench/tune_gemm.py --quick --out "$out/tune_gemm.json" ;;
    model) run bench/tune_model.py --quick --out "$out/tune_model.json" ;;
    models) BUDGET=${MODELS_S:-560} TAIL=80 run bench/models.py --budget-s "${MODELS_BUDGET:-420}" \
              --out "$out/models.json" ${MODELS_ARGS:-} ;;
    launch) run bench/launch_overhead.py --out "$out/launch_overhead.json" ;;
    backends) BUDGET=${BACKENDS_S:-280} run bench/gemm_backends.py --out "$out/gemm_backends.json" ;;
    eco) run bench/ecosystem.py --out "$out/ecosystem.json" ;;
    *) echo "unknown part $part" ;;
  esac
done
exit 0
