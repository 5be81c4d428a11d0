#!/usr/bin/env bash
# The GPU run as one command for a lent GPU machine (see README "The GPU run"): preflight, then every measurement
# row of benchmarks/gpu_check.py, then the table. Everything lands in $OUT (default benchmarks/results/gpu_run) as
# soon as it exists: device.txt, gpu_run.jsonl (one row per measurement), gpu_check.log, fit.log, gpu_report.md
# (--smoke and --check: a new folder in /tmp unless OUT is set).
#
#   benchmarks/gpu_run.sh            # on the GPU machine; the wheels in .whl/ (make gpu-wheels) are installed first
#   benchmarks/gpu_run.sh --smoke    # every row on a CPU with tiny sizes (run by the test suite)
#   benchmarks/gpu_run.sh --check    # every configuration the GPU run uses, at full size, without training (suite)
#
# Time limits exist only on the GPU machine, whose lease is short: the rows get what is left of TOTAL seconds after
# the wheels and the preflight (their own budget 25 s less, so the last row can finish), and the whole run ends
# within 6 minutes; the preflight's 60 s only guards against a hang (a missing CUDA or import stops it in
# seconds). --smoke and --check have no limits (CI machines differ 2x in speed).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --check) MODE=check ;;
  "") ;;
  *) echo "usage: $0 [--smoke | --check]" >&2; exit 2 ;;
esac
if [[ -z "${OUT:-}" ]]; then  # a GPU run's results are committed from benchmarks/results/gpu_run; CPU runs' are not
  if [[ $MODE == gpu ]]; then OUT=benchmarks/results/gpu_run; else OUT="$(mktemp -d /tmp/amos_zoo_gpu_$MODE.XXXXXX)"; fi
fi
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
TOTAL=350  # seconds of command time for the GPU run: 6 minutes, less 10 s for the table

limit() {  # seconds, command...: a time limit on the GPU machine only
  local seconds=$1; shift
  if [[ $MODE == gpu ]]; then timeout "$seconds" "$@"; else "$@"; fi
}

if [[ $MODE == gpu ]] && ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels: what the machine's python lacks
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; then
    echo "STOP: installing the wheels in .whl/ failed" | tee "$OUT/device.txt"
    exit 1
  fi
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout itself, without an install step

CPU_OK=()
[[ $MODE != gpu ]] && CPU_OK=(--cpu-ok)
limit 60 "$PY" benchmarks/gpu_preflight.py --out "$OUT/device.txt" "${CPU_OK[@]}"
rc=$?
[[ $rc -eq 124 ]] && echo "STOP: the preflight did not finish within 60 s" >>"$OUT/device.txt"
if [[ $rc -ne 0 ]]; then
  echo "STOP: preflight failed (rc=$rc); the reason is the last line of $OUT/device.txt"
  exit "$rc"
fi

if [[ $MODE == check ]]; then
  "$PY" benchmarks/gpu_check.py --check --out "$OUT"
  exit $?
fi

if [[ -z "${WORK:-}" ]]; then  # scratch data and runs, removed at the end
  WORK="$(mktemp -d /tmp/amos_zoo_gpu_run.XXXXXX)"
  trap 'rm -rf "$WORK"' EXIT
fi
left=$((TOTAL - SECONDS))
ARGS=(--budget "$((left - 25))")
[[ $MODE == smoke ]] && ARGS=(--smoke)
limit "$left" "$PY" benchmarks/gpu_check.py "${ARGS[@]}" --out "$OUT" --work "$WORK" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
"$PY" benchmarks/gpu_report.py "$OUT/gpu_run.jsonl" --device "$OUT/device.txt" --out "$OUT/gpu_report.md" || status=1
echo "gpu_run ($MODE): exit $status; rows in $OUT/gpu_run.jsonl, table in $OUT/gpu_report.md"
exit "$status"
