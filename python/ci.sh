#!/usr/bin/env bash
# CI of the Python package (issue 16), called by .ci/run: a virtualenv under python/.venv
# (git-ignored), PyTorch and pytest from PyPI, `pip install ./python` exactly as the README
# says (maturin builds the extension in release), then pytest on python/tests.
# Measured on the 2-core dev machine: `pip install torch` (torch 2.15.0 and its CUDA wheels
# from PyPI, 2.4 GB; no CPU-only wheel is on PyPI) 3 min 17 s; the release build of the
# extension and the tests are printed with their times below.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --upgrade pip

echo "-- pip install torch pytest"
time "${pip[@]}" install --quiet torch pytest

echo "-- pip install ./python (dev profile: reuses what cargo test built in target/debug)"
# Users get maturin's release build; CI builds the same sources in the dev profile, where the
# workspace already compiles the kernels optimised (Cargo.toml [profile.dev.package.*]), so
# the extension links against the crates `cargo test --workspace` just built instead of
# rebuilding the whole runtime in release.
time MATURIN_PEP517_ARGS="--profile dev" "${pip[@]}" install --quiet --force-reinstall --no-deps .

echo "-- pytest"
status=0
(cd tests && ../.venv/bin/python -m pytest -q -p no:cacheprovider .) || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
