#!/usr/bin/env bash
# Everything segbench needs a GPU for, in one call that ends by itself in <= 8 minutes
# on one H200 (bench/README.md, "The GPU session"). Each step has its own time budget
# (and a hard `timeout` 20 s above it); logs and figures are written to $OUT as they
# are measured, so a step cut short keeps what it had.
#
#   bash bench/gpu_session.sh            # on the GPU machine: results in $OUT
#   bash bench/gpu_session.sh --dry-run  # on any machine: the same steps on the CPU, toy sizes
#
# On a machine without segbench's dependencies (the lent GPU has torch, torchvision,
# timm, scipy, pandas), the wheels in .whl/ (make gpu-wheels) are installed first
# into /tmp/site. At most 8 files come back from $OUT: gpu_session.json (every
# figure), session.log, cells.json (the cell table for project_full_benchmark.py),
# queue.db (the queue step's database), queue-worker.log, dmon.log.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=""
if [[ "${1:-}" == "--dry-run" ]]; then DRY="--dry-run"; fi
OUT="${OUT:-$PWD/gpu-session-out}"
mkdir -p "$OUT"
LOG="$OUT/session.log"
: >"$LOG"
say() { echo "[$(date +%T)] $*" | tee -a "$LOG"; }

if [[ -d .whl ]] && ! python3 -c "import segmentation_models_pytorch, sqlalchemy, celery" 2>/dev/null; then
  say "installing the carried wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >>"$LOG" 2>&1 || say "wheel install failed"
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}" PATH="/tmp/site/bin:$PATH"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY="${PYTHON:-python3}"
if [[ -x .venv/bin/python && -z "${PYTHON:-}" && -n "$DRY" ]]; then PY=.venv/bin/python; fi

DMON=""
if [[ -z "$DRY" ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi dmon -s u -d 1 >"$OUT/dmon.log" 2>&1 &
  DMON=$!
fi

# step budget (seconds): dry-run budgets are for the CPU of the test machine
if [[ -n "$DRY" ]]; then
  STEPS=("env 30" "steps 90" "harness 60" "slots 60" "queue 120" "project 30")
else
  STEPS=("env 20" "steps 180" "harness 45" "slots 90" "queue 130" "project 15")
fi
started=$SECONDS
for entry in "${STEPS[@]}"; do
  read -r step budget <<<"$entry"
  say "step $step (budget ${budget} s)"
  timeout --kill-after=10 $((budget + 20)) "$PY" bench/gpu_session.py "$step" --out "$OUT" \
    --budget "$budget" $DRY >>"$LOG" 2>&1
  say "step $step ended with exit code $? after $((SECONDS - started)) s in all"
done

if [[ -n "$DMON" ]]; then kill "$DMON" 2>/dev/null; fi
rm -rf "$OUT"/data-*
say "done in $((SECONDS - started)) s; figures in $OUT/gpu_session.json"
