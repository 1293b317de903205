#!/usr/bin/env bash
# The GPU benchmarks, in as few device calls as they fit. Usage (on the device machine, repo root; .whl carried):
#   bash bench/run_gpu.sh OUTDIR [anchors] [quant] [gemm] [model] [models] [backends] [launch] [sweep] [llamaquant] [qlarge]
#   [smallattn] [cutlass]
#   (none named: the first four)
# Each part runs under `timeout ${BUDGET:-170}`; logs and JSON land in OUTDIR. `models` (bench/models.py, whole HF
# models; ~8 min for all) runs under `timeout ${MODELS_S:-560}`, starts no model after ${MODELS_BUDGET:-420} s and
# takes MODELS_ARGS (e.g. "--models gpt2,llama_b4 --quant int8,int4"); give it its own device call. `backends`
# (bench/gemm_backends.py) runs under `timeout ${BACKENDS_S:-280}`, `quant` (bench/quant_linear.py --quick, ~3-4 min)
# under `timeout ${QUANT_S:-420}` with QUANT_ARGS, `sweep` (bench/gemm_sweep.py, < 8 min) too.
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
    cutlass) BUDGET=${CUTLASS_BUILD_S:-170} run -m tilecraft.quant.cutlass ;;  # (prebuild: before quantized models)
    llamaquant)  # issue 15 on LLaMA-492M's own weight shapes: decode M=16 config sweep, prefill dequantize tiles,
      # then the whole model at b1x16 / b4x512 in bf16, int8, int4 (~6 min)
      BUDGET=200 TAIL=30 run bench/quant_linear.py --schemes int8,int4 --ms 16 --sweep 11 --no-inductor --no-conv \
        --shapes 2048x2048,2048x512,2048x5632,5632x2048,2048x32000 --budget-s 170 --out "$out/quant_m16.json"
      BUDGET=90 TAIL=12 run bench/quant_linear.py --schemes int8,int4 --ms 2048 --sweep 1 --no-inductor --no-conv \
        --shapes 2048x2048,2048x5632,5632x2048 --dequant-chunks ${DEQUANT_CHUNKS:-4,8,16} --out "$out/quant_m2048.json"
      BUDGET=200 TAIL=30 run bench/models.py --models llama_b1,llama_b4 --backends tilecraft --quant int8,int4 \
        --budget-s 150 --out "$out/models_quant.json" ;;
    qlarge)  # the large-M wgmma candidates at M=2048 vs cuBLAS bf16 and dequantize+cuBLAS (~1-2 min)
      BUDGET=${QLARGE_S:-300} TAIL=50 run bench/quant_linear.py --large-m --out "$out/quant_large_m.json" ;;
    smallattn)  # decode-sized attention: torch's SDPA backends vs the few-token kernel, then LLaMA b1x16 with it on
      BUDGET=90 TAIL=8 run bench/sdpa_small_t.py --out "$out/sdpa_small_t.json"
      TILECRAFT_SMALL_ATTN=1 BUDGET=150 TAIL=12 run bench/models.py --models llama_b1 --backends tilecraft \
        --quant int8,int4 --out "$out/models_small_attn.json" ;;
    sweep) BUDGET=${SWEEP_TIMEOUT:-470} run bench/gemm_sweep.py --budget-s ${SWEEP_S:-420} --out "$out/gemm_sweep.json" ;;
    *) echo "unknown part $part" ;;
  esac
done
exit 0
