#!/usr/bin/env bash
# Install ptxas from the PyPI wheel `nvidia-cuda-nvcc-cu12` into .tools/cuda-nvcc (no CUDA
# toolkit, no GPU needed) and print the path of the ptxas binary on stdout.
# Exit code 1 (with a message on stderr) when the install is impossible, e.g. offline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.tools/cuda-nvcc"
version="${PTXAS_WHEEL_VERSION:-12.9.86}"
find_ptxas() { find "$dest" -type f -name ptxas -perm -u+x 2>/dev/null | head -n 1; }
existing=$(find_ptxas || true)
if [ -n "$existing" ]; then echo "$existing"; exit 0; fi
mkdir -p "$dest"
py=$(command -v python3 || command -v python || true)
if [ -z "$py" ]; then echo "install-ptxas: no python3 to run pip" >&2; exit 1; fi
if ! "$py" -m pip install --quiet --disable-pip-version-check --no-deps --target "$dest" \
    "nvidia-cuda-nvcc-cu12==$version" >&2; then
  echo "install-ptxas: pip could not install nvidia-cuda-nvcc-cu12==$version" >&2
  exit 1
fi
bin=$(find "$dest" -type f -name ptxas | head -n 1)
if [ -z "$bin" ]; then echo "install-ptxas: wheel has no ptxas" >&2; exit 1; fi
chmod +x "$bin"
"$bin" --version >&2
echo "$bin"
