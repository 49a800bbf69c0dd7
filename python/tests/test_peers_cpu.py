"""The peer comparison script's CPU part (ours against PyTorch eager retention and SDPA)
runs end to end and its numbers agree: ours within f32 rounding of float64 eager."""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(
    os.path.dirname(__file__), "..", "..", "benchmarks", "peers", "compare.py"
)


def test_peer_script_cpu_quick(tmp_path):
    out = tmp_path / "rows.json"
    run = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "peer/ours" in run.stdout
    rows = json.loads(out.read_text())
    impls = {(r["op"], r["impl"]) for r in rows}
    for op in ("forward", "forward + backward"):
        for impl in ("ours chunk", "ours parallel", "torch eager"):
            assert (op, impl) in impls
        assert (op, "torch sdpa (causal attention)") in impls
    assert ("decode", "ours decode") in impls
    for r in rows:
        assert r["ms"] > 0 and r["tflops"] > 0
        if r["impl"].startswith("ours"):
            # f32 kernels against the float64 reference (relative to its largest value).
            assert r["max_rel_diff"] <= 1e-5, r
            assert r["ratio_vs_ours"] is not None


def test_peer_script_rejects_a_bad_shape():
    run = subprocess.run(
        [sys.executable, SCRIPT, "--device", "cpu", "--shape", "1,2,3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    assert "B,H,K,V,T" in run.stderr
