#!/usr/bin/env bash
# The GPU run as one command for a lent GPU machine (see README "The GPU run"): preflight, then every measurement
# row of benchmarks/gpu_check.py, then the table. Everything lands in $OUT (default benchmarks/results/gpu_run) as
# soon as it exists: device.txt, gpu_run.jsonl (one row per measurement), gpu_check.log, fit.log, gpu_report.md.
#
#   benchmarks/gpu_run.sh            # on the GPU machine; the wheels in .whl/ (make gpu-wheels) are installed first
#   benchmarks/gpu_run.sh --smoke    # every row on a CPU with tiny sizes (run by the test suite)
#   benchmarks/gpu_run.sh --check    # every configuration the GPU run uses, at full size, without training (suite)
#
# Time limits exist only on the GPU machine, whose lease is short: preflight 30 s, the rows 320 s (their own
# budget is 285 s), so the whole run ends within 6 minutes. --smoke and --check have none (CI machines differ 2x).
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
case "${1:-}" in
  --smoke) MODE=smoke ;;
  --check) MODE=check ;;
  "") ;;
  *) echo "usage: $0 [--smoke | --check]" >&2; exit 2 ;;
esac
OUT="${OUT:-benchmarks/results/gpu_run}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

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
limit 30 "$PY" benchmarks/gpu_preflight.py --out "$OUT/device.txt" "${CPU_OK[@]}"
rc=$?
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
SMOKE=()
[[ $MODE == smoke ]] && SMOKE=(--smoke)
limit 320 "$PY" benchmarks/gpu_check.py "${SMOKE[@]}" --out "$OUT" --work "$WORK" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
"$PY" benchmarks/gpu_report.py "$OUT/gpu_run.jsonl" --device "$OUT/device.txt" --out "$OUT/gpu_report.md" || status=1
echo "gpu_run ($MODE): exit $status; rows in $OUT/gpu_run.jsonl, table in $OUT/gpu_report.md"
exit "$status"
