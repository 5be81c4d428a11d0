#!/usr/bin/env bash
# The GPU checks as one command for a lent machine (torch present; monai, nibabel... carried as wheels in .whl/,
# see ../.library/device/README.md), within about 8 minutes; each result goes to $OUT (default
# benchmarks/results/gpu_run) as soon as it exists, so a run stopped at its time limit keeps what it finished.
#
#   benchmarks/gpu_run.sh            # on the GPU machine
#   benchmarks/gpu_run.sh --smoke    # the same script on a CPU, with tiny settings (run by the test suite)
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""
[[ "${1:-}" == "--smoke" ]] && SMOKE="--smoke"
OUT="${OUT:-benchmarks/results/gpu_run}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then   # carried wheels: install what the machine lacks
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"              # the checkout itself, without an install step

"$PY" - <<'PY' >"$OUT/device.txt" 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY
status=0
run() {  # name, seconds, command...: one check, its own time limit, its output kept whatever happens
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "rc=$rc" >>"$OUT/$name.txt"
  tail -n 12 "$OUT/$name.txt"
  [[ $rc -ne 0 ]] && status=1
  return 0
}
if [[ -n "$SMOKE" ]]; then
  run gpu_check 300 "$PY" benchmarks/gpu_check.py --smoke --out "$OUT/gpu_check.md"
else
  run gpu_check 420 "$PY" benchmarks/gpu_check.py --out "$OUT/gpu_check.md"
  run bench_data 60 "$PY" benchmarks/bench_data.py --batches 10
fi
exit $status
