#!/usr/bin/env bash
# The speed figures for docs/results/gpu.md in one command, on a machine with a GPU:
#
#   bash scripts/gpu_check.sh [GAME] [TRAIN_SECONDS]
#
# 1. scripts/bench_train.py at full size (the atari100k preset) with 1 and with 4 updates
#    per call: the phase breakdown, memory peak and projected full-run time of each, over
#    UPDATES timed updates (default 20);
# 2. if TRAIN_SECONDS > 0 (default 0), `dreamzero train --preset atari100k --env GAME` for
#    that long into runs/gpu/GAME, then stopped; rerunning the script resumes the run from
#    its last checkpoint, so a full run is a few such commands (BENCH=0 skips step 1).
#
# Logs, the benchmarks' JSON and the run's metrics.jsonl go to RESULTS_DIR (default
# runs/gpu_check). PRESET=smoke runs the same path on a CPU (about 4 minutes on 2 cores,
# most of it compiling the two benchmarks).
# On an offline machine without mctx, gymnasium, ale-py or tyro, put their wheels in .whl/
# at the project root (Python 3.12 wheels for the machine's platform); they are installed
# into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
game=${1:-pong}
train_seconds=${2:-0}
preset=${PRESET:-atari100k}
results=${RESULTS_DIR:-runs/gpu_check}
mkdir -p "$results"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}

if ! "$python" -c "import mctx, gymnasium, ale_py, tyro" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "missing packages and no wheels in .whl/"; exit 2; }
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
  | tee "$results/device.txt"
"$python" -c "import jax, flax, mctx; print('jax', jax.__version__, 'flax', flax.__version__,
  'mctx', mctx.__version__, jax.devices())" | tee -a "$results/device.txt"

status=0
if [[ ${BENCH:-1} != 0 ]]; then
  for per_call in 1 4; do
    echo "== bench_train $preset $game, $per_call update(s) per call"
    "$python" scripts/bench_train.py --preset "$preset" --env "$game" \
      --updates-per-call "$per_call" --updates "${UPDATES:-20}" --json "$results/bench_m$per_call.json" \
      2>&1 | tee "$results/bench_m$per_call.txt" || status=1
  done
fi

if (( train_seconds > 0 )); then
  run_dir=runs/gpu/$game
  echo "== train $preset $game for $train_seconds s into $run_dir"
  # SIGINT first (a clean stop), SIGKILL 30 s later; a checkpoint survives either.
  timeout --signal=INT --kill-after=30 "$train_seconds" \
    "$python" -m agent.cli train --preset "$preset" --env "$game" --logdir "$run_dir" \
    --log.progress False 2>&1 | tee -a "$results/train.txt"
  code=${PIPESTATUS[0]}
  (( code == 0 || code == 124 )) || status=1  # 124: stopped by the timeout, to resume
  cp "$run_dir/metrics.jsonl" "$results/" 2>/dev/null && tail -n 3 "$results/metrics.jsonl"
  cp "$run_dir/eval.json" "$results/" 2>/dev/null
fi
exit $status
