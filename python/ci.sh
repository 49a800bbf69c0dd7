#!/usr/bin/env bash
# CI of the Python package (issue 16), called by .ci/run: a virtualenv under python/.venv
# (git-ignored), PyTorch and pytest from PyPI, `pip install ./python` exactly as the README
# says, then pytest on python/tests.
# Disk: PyPI has no CPU-only torch for Linux, so torch comes with its CUDA libraries (about
# 4.4 GB installed). CI machines can have little disk free (a run failed with ENOSPC at
# `pip install torch`), so this script keeps the footprint down: no pip cache, and torch's
# dependencies without triton (1 GB; only torch.compile's GPU backend uses it; the CPU
# inductor and aot_eager backends our tests use do not).
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip)
"${pip[@]}" install --quiet --no-cache-dir --upgrade pip

torch_version=2.15.0
echo "-- disk before the Python install"; df -h . | tail -1
echo "-- pip install torch==$torch_version (no triton) pytest"
time {
  "${pip[@]}" install --quiet --no-cache-dir --no-deps "torch==$torch_version"
  mapfile -t torch_deps < <(.venv/bin/python - <<'PY'
import importlib.metadata as metadata
from pip._vendor.packaging.requirements import Requirement
for line in metadata.requires("torch") or []:
    req = Requirement(line)
    if req.name == "triton" or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    print(f"{req.name}{extras}{req.specifier}")
PY
)
  "${pip[@]}" install --quiet --no-cache-dir "${torch_deps[@]}" pytest
}
echo "-- disk after the Python install"; df -h . | tail -1

echo "-- pip install ./python (dev profile: reuses what cargo test built in target/debug)"
# Users get maturin's release build; CI builds the same sources in the dev profile, where the
# workspace already compiles the kernels optimised (Cargo.toml [profile.dev.package.*]), so
# the extension links against the crates `cargo test --workspace` just built instead of
# rebuilding the whole runtime in release.
time MATURIN_PEP517_ARGS="--profile dev" "${pip[@]}" install --quiet --no-cache-dir --force-reinstall --no-deps .

echo "-- pytest"
status=0
(cd tests && ../.venv/bin/python -m pytest -q -p no:cacheprovider .) || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"
