#!/usr/bin/env bash
# Every GPU check the open issues ask for, in one run on a machine with a CUDA GPU (the
# device tool's H200): issue 13 (device API, byte counters, graphs, decode bench with and
# without replay), 15 (GPU chunkwise backward and the epilogue kernels on CUDA against the
# reference), 16 (C ABI on CUDA pointers; the peer script against fla and SDPA when torch is
# there), 17 (the device-resident model step on CUDA), 18 (decode per batch to re-measure the time
# model's excluded rows), and compute-sanitizer memcheck + racecheck over one launch of every
# family. Results go to ${OUT:-./gpu-check}; every step runs even if an earlier one fails;
# each step has a time limit so the whole run fits one 10-minute device call after the build.
# Dry run without a GPU: `DRY_RUN=1 scripts/gpu-check.sh` prints the steps only.
set -uo pipefail
out="${OUT:-./gpu-check}"
mkdir -p "$out"
status=0
step() {
  local limit=$1
  shift
  echo "== $*" | tee -a "$out/steps.log"
  [ -n "${DRY_RUN:-}" ] && return 0
  timeout "$limit" "$@" >>"$out/steps.log" 2>&1 || {
    status=1
    echo "FAILED ($?): $*" | tee -a "$out/steps.log"
  }
}
[ -n "${DRY_RUN:-}" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" 2>&1

step 300 cargo build --release --bin retention --tests
# Issue 13, 15: one test body per op on Cpu, Emulated and Cuda (present here).
step 240 cargo test --release --test device_api --test device_pool --test facade_devices \
  --test training_api --test parallel_backward_device --test gpu_backward_long
step 120 cargo test --release -p retention-runtime --test epilogue_devices --test decode_variants \
  --test state_pool_devices --test state_pool_prefill_into --test layer_ops_devices \
  --test attention_devices --test blas_devices
step 60 cargo test --release -p retention-runtime --lib cuda
step 120 cargo test --release -p retention-capi
# Issue 13 and 18: decode of the 1.3b head per batch, host time and graph replay.
step 120 cargo run --release --bin retention -- bench --device cuda --model 1.3b --suite decode \
  --json "$out/decode-1.3b.json"
# Issue 15: training on CUDA (device forward + GPU backward), fla's shape and the 1.3b heads.
step 180 cargo run --release --bin retention -- bench --device cuda --suite train --dtype bf16 \
  --quick --json "$out/train-bf16.json"
# Issue 17: the model suite on CUDA (the device-resident step: cuBLAS GEMMs, layer ops,
# retention decode through the state pool, attention decode over the device KV cache).
step 60 cargo run --release --bin retention -- bench --device cuda --suite model --model 1.3b \
  --quick --json "$out/model-1.3b.json"
# Issue 16: the peer script on CUDA (fla from the carried `fla-core` wheel when present).
if [ -z "${DRY_RUN:-}" ] && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  step 300 python3 -m pip install -q ./python
  step 300 python3 benchmarks/peers/compare.py --device cuda --dtype bf16 \
    --shape 4,8,256,256,2048 --shape 8,32,128,128,16384 --json "$out/peers.json"
fi
# Sanitizers over one launch of every family (device pool: decode/attention; training_api:
# chunkwise forward + backward; epilogue_devices: the epilogue).
if [ -z "${DRY_RUN:-}" ] && command -v compute-sanitizer >/dev/null; then
  for t in device_pool training_api; do
    bin=$(cargo test --release --test "$t" --no-run --message-format=json 2>/dev/null |
      grep -o "\"executable\":\"[^\"]*$t[^\"]*\"" | head -n 1 | cut -d'"' -f4)
    for tool in memcheck racecheck; do
      step 300 compute-sanitizer --tool "$tool" --error-exitcode 1 "$bin" --test-threads 1
    done
  done
fi
exit $status
