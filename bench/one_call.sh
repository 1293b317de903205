#!/usr/bin/env bash
# Everything a session checks and times on the GPU, in one device call, most important first; each step runs under
# its own time limit so one slow step cannot take the rest with it. Tables print last.
#   bash bench/one_call.sh OUTDIR            (device machine, repo root; carry [".whl"] from scripts/fetch_gpu_wheels.sh)
# Results and logs are written under /tmp/one_call and packed into OUTDIR/one_call.tgz (one file: the device tool
# brings back at most 8).
# Budgets (seconds) can be set: MODELS_S, QUANT_S, CHECK_S, BACKENDS_S, LAUNCH_S, FUZZ_S, COMPILE_S (0: a step is
# skipped only where said; set a budget of 1 to skip another). Next session's issue-13/14 call, for example:
#   MODELS_S=1 QUANT_S=1 CHECK_S=1 BACKENDS_S=1 LAUNCH_S=1 FUZZ_S=230 FUZZ_JOBS=15 FUZZ_MODELS=3000 COMPILE_S=300 \
#     bash bench/one_call.sh $OUT
set -uo pipefail
dest=${1:-${OUT:-bench/results}}
out=/tmp/one_call
mkdir -p "$out" "$dest"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1 TILECRAFT_CACHE=${TILECRAFT_CACHE:-/tmp/tilecraft-cache}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
step() {  # step NAME SECONDS CMD...: run under a limit, log to OUTDIR/NAME.log, show its tail
  local name=$1 secs=$2; shift 2
  echo "=== $(date +%T) $name (limit ${secs}s): $*"
  timeout "$secs" "$@" > "$out/$name.log" 2>&1
  echo "=== $name exit $?"
  grep -v "Warning\|warn(\|^  " "$out/$name.log" | tail -${TAIL:-6}
}
# 1. whole models: eager, Inductor default, tilecraft defaults (the issue-12/13 numbers)
step models "${MODELS_S:-360}" python3 bench/models.py --models "${MODELS:-gpt2,llama_b4,llama_b1,bert,qwen2,opt,neox}" \
  --budget-s $(( ${MODELS_S:-360} - 50 )) --out "$out/models.json"
# 2. quantized LLaMA steps (issue 15); first the CUTLASS mixed-input GEMM's libraries, in parallel (their prefill
# path, where nvidia-cutlass came in .whl/; else it says why not and the quantized rows dequantize + cuBLAS)
step cutlass_build "${CUTLASS_BUILD_S:-170}" python3 -m tilecraft.quant.cutlass
step quant "${QUANT_S:-60}" python3 bench/models.py --models llama_b1,llama_b4 --backends none --quant int8,int4 \
  --out "$out/models_quant.json"
# 3. GPU-only behaviour: both GEMM backends, the CUDA-graph output rule
step check "${CHECK_S:-25}" python3 bench/gpu_check.py --out "$out/gpu_check.json"
# 4. the Hopper (persistent/TMA) matmul against cuBLAS on a few model shapes
step backends "${BACKENDS_S:-45}" python3 bench/gemm_backends.py --only "${BACKENDS_ONLY:-fc1_gelu}" \
  --out "$out/gemm_backends.json"
# 5. host time per launch without CUDA graphs
[ -f bench/launch_overhead.py ] && step launch "${LAUNCH_S:-30}" python3 bench/launch_overhead.py --out "$out/launch.json"
# 6. a fuzz campaign on the GPU (generated kernels, three dtypes); FUZZ_MODELS=3000 FUZZ_S=220 for issue 14's run
step fuzz "${FUZZ_S:-40}" python3 -m tilecraft fuzz --device cuda --jobs "${FUZZ_JOBS:-8}" --time "$(( ${FUZZ_S:-40} > 20 ? ${FUZZ_S:-40} - 15 : 5 ))s" \
  --max-models "${FUZZ_MODELS:-100000}" --seed "${FUZZ_SEED:-14}" --reduce-seconds 5 --no-progress --out "$out/fuzz"
# 7. compile time, cold and warm caches, against Inductor (issue 13); off unless COMPILE_S is set (~280 s for three)
[ "${COMPILE_S:-0}" -gt 0 ] && step compile "$COMPILE_S" python3 bench/compile_time.py --models "${COMPILE_MODELS:-gpt2,llama,bert}" \
  --budget-s $(( COMPILE_S - 40 )) --out "$out/compile_time.json"
echo "=== tables"
TAIL=40 step table 15 python3 bench/models.py --table "$out/models.json" "$out/models_quant.json"
tar czf "$dest/one_call.tgz" -C /tmp one_call && ls -la "$dest"
exit 0
