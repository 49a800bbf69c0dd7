#!/usr/bin/env bash
# Issue 13's checks on a machine with a CUDA GPU, in one run: the device-API tests (every op
# on Cuda(0) beside the CPU and the emulator, byte-counted decode steps, graph capture and
# replay), the decode bench of the 1.3b head with host time and graph-replayed latency, and
# compute-sanitizer memcheck/racecheck over the device-pool test when the tool is installed.
# Results go to ${OUT:-./gpu-check}; every step runs even if an earlier one fails.
set -uo pipefail
out="${OUT:-./gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" 2>&1
status=0
step() { echo "== $*" | tee -a "$out/steps.log"; "$@" >>"$out/steps.log" 2>&1 || { status=1; echo "FAILED: $*" | tee -a "$out/steps.log"; }; }
step cargo test --release --test device_api --test device_pool --test facade_devices
step cargo test --release -p retention-runtime --lib cuda
step cargo run --release --bin retention -- bench --device cuda --model 1.3b --suite decode \
  --json "$out/decode-1.3b.json"
if command -v compute-sanitizer >/dev/null; then
  bin=$(cargo test --release --test device_pool --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*device_pool[^"]*"' | head -n 1 | cut -d'"' -f4)
  for tool in memcheck racecheck; do
    step compute-sanitizer --tool "$tool" --error-exitcode 1 "$bin" --test-threads 1
  done
fi
exit $status
