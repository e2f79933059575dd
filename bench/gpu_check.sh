#!/usr/bin/env bash
# One call on a lent GPU machine (no network; torch with CUDA, transformers, accelerate, peft): unpack the wheels
# carried in bench/wheels (`make gpu-wheels`), then measure (bench/gpu_check.py: generate vs plain generate at
# batch 1/32/128, HHH scoring bf16 vs float32, recipes/smoke.yaml end to end) into $OUT/gpu_check.json, all
# within 8 minutes. `--cpu`: the same code on the CPU with tiny sizes (what CI runs).
#
#   bash bench/gpu_check.sh            # on the GPU machine; OUT defaults to ./gpu-check-out
#   bash bench/gpu_check.sh --cpu
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=cuda
[ "${1:-}" = "--cpu" ] && MODE=cpu
OUT=${OUT:-$ROOT/gpu-check-out}
PY=${PY:-$(command -v python3 || command -v python)}
SITE=${CAI_GPU_SITE:-${TMPDIR:-/tmp}/cai-gpu/site-packages}  # "site-packages" in the path: see install()
LIMIT_S=${GPU_CHECK_LIMIT_S:-480}  # the whole call, install included
mkdir -p "$OUT"
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false GRADIO_ANALYTICS_ENABLED=False
export PYTHONUNBUFFERED=1
START=$(date +%s)

if [ -d bench/wheels ]; then
  "$PY" bench/gpu_check.py install --wheels bench/wheels --site "$SITE" || exit 2
else
  echo "gpu_check: no bench/wheels (run 'make gpu-wheels' and carry it); using what is installed" >&2
fi
LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
# Sections start while 60 s of the limit remain; `timeout` ends it at the limit whatever happens (the JSON
# keeps every section that finished).
timeout --kill-after=10 "$LEFT" "$PY" bench/gpu_check.py run --mode "$MODE" --out "$OUT/gpu_check.json" \
  --site "$SITE" --budget-s $(( LEFT - 60 ))
RC=$?
[ "$RC" = 124 ] && echo "gpu_check: stopped at the ${LIMIT_S} s limit; $OUT/gpu_check.json has what finished" >&2
exit "$RC"
