#!/usr/bin/env bash
# The GPU check in one command, within 8 minutes on a machine with CuPy and a CUDA device:
# install what the package needs (its gpu, train and test extras), then run
# `python -m benchmarks.gpu.run`: the GPU tests, setup + certified solve on the GPU against
# the CPU path, the ImageNet-shaped exact step, `tallskinny-train --backend cupy`
# throughput, all in one report (report.md and report.json; default folder gpu-report).
#
#   bash benchmarks/gpu/run.sh [--out DIR] [--cpu-only] [--quick] [other options of run.py]
#
# GPU_CHECK_SECONDS (default 480) bounds the whole check, the install included; PYTHON
# (default python) is the interpreter.
set -uo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
python=${PYTHON:-python}
total=${GPU_CHECK_SECONDS:-480}
out=gpu-report
prev=
for arg in "$@"; do
    [ "$prev" = --out ] && out=$arg
    case $arg in --out=*) out=${arg#--out=} ;; esac
    prev=$arg
done
modules="numpy, scipy, numba, threadpoolctl, tqdm, matplotlib, pytest, pytest_benchmark"
case " $* " in *" --cpu-only "*) ;; *) modules="cupy, $modules" ;; esac

# Everything runs from this checkout (python -m), so only the dependencies must be installed;
# where they all are (an offline machine prepared beforehand), pip is not asked.
if "$python" -c "import $modules" 2>/dev/null; then
    echo "== dependencies present ($modules)"
else
    echo "== python -m pip install \".[gpu,train,test]\""
    timeout 240 "$python" -m pip install --retries 2 --timeout 30 ".[gpu,train,test]" \
        || echo "gpu check: pip install failed; going on with what is installed" >&2
fi

# The run keeps to its budget; the guard below stops it at most 15 s later, 5 s before the
# total is up.
left=$(( total - (SECONDS - started) - 20 ))
if [ "$left" -lt 60 ]; then
    echo "gpu check: only $left s left after the install; not enough for a run" >&2
    exit 1
fi
echo "== python -m benchmarks.gpu.run --budget $left $*"
timeout --kill-after=5 $(( left + 10 )) "$python" -m benchmarks.gpu.run --budget "$left" "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "gpu check: stopped by the time guard; $out/report.md holds what was measured" >&2
fi
echo "== done in $(( SECONDS - started )) s, exit status $status; report: $out/report.md"
exit "$status"
