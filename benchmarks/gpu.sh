#!/usr/bin/env bash
# The GPU checks and benchmarks in one go, for the day a device is lent (< 8 minutes on one
# H100 is the budget; not yet run on one): the CUDA tests (tests/optim/test_gpu.py: every rule,
# float32/bf16/int8 state, eager and compiled, against torch's fused kernels; FSDP2 over NCCL
# when two GPUs are present; the 2-rank owner tests), then benchmarks/gpu.py (step time and
# peak memory against torch.optim). Records go to OUT (default bench/gpu/):
#   tests.xml, tests.txt   pytest's JUnit report and summary
#   gpu.json, gpu.txt      the benchmark's thalweg.record and printed table
#   environment.txt        GPU, driver, torch and the commit measured
#
#   benchmarks/gpu.sh [OUT]        (PY=python to use another interpreter)
#   THALWEG_GPU_TESTS_DEVICE=cpu DEVICE=cpu QUICK=1 benchmarks/gpu.sh /tmp/gpu   (a dry run on the CPU)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-bench/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_FX_GRAPH_CACHE=1  # compiled kernels shared by the tests and the benchmark
start=$(date +%s)
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
} > "$OUT/environment.txt"
cat "$OUT/environment.txt"
workers=()
if "$PY" -c "import xdist" 2>/dev/null; then workers=(-n 6 --dist loadgroup); fi  # compilation is CPU-bound
timeout 300 "$PY" -m pytest -q -m "gpu or slow" "${workers[@]}" tests/optim/test_gpu.py \
  tests/optim/test_distributed_matrix.py --junitxml "$OUT/tests.xml" 2>&1 | tail -25 | tee "$OUT/tests.txt"
tests=${PIPESTATUS[0]}
quick=(); [ "${QUICK:-0}" = 1 ] && quick=(--quick)
timeout 180 "$PY" benchmarks/gpu.py --rounds 20 --device "${DEVICE:-cuda}" "${quick[@]}" --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.txt"
bench=${PIPESTATUS[0]}
echo "gpu.sh: tests exit $tests, benchmark exit $bench, $(( $(date +%s) - start )) s; records in $OUT/"
exit $(( tests != 0 || bench != 0 ))
