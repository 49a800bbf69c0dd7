#!/usr/bin/env python3
"""Ours against the peers on the same tensors, in one process.

Forward, forward + backward and decode steps of retention through
``retention.chunk_retention`` / ``parallel_retention`` / ``fused_recurrent_retention``
against:

* CUDA: fla's ``chunk_retention``, ``parallel_retention`` and ``fused_recurrent_retention``
  (the ``fla-core`` wheel; skipped with a line if it is not installed) and PyTorch's
  ``scaled_dot_product_attention`` (causal; the FlashAttention backend where it applies);
* CPU (runs in CI): PyTorch eager retention (the parallel form, (QKᵀ ⊙ D)V) and SDPA.

Prints, per shape and op: median milliseconds, TFLOP/s, peak memory (CUDA only: the
caching allocator's high-water mark over the call), time ratio (peer / ours; above 1 means
ours is faster) and the largest difference of o from the numeric reference (fla on CUDA,
float64 eager on the CPU), relative to the reference's largest magnitude.

FLOPs (ours' bench convention, ``tools/src/bench/train/point.rs``): retention forward
2C(K+V) + 4KV per (row, head, token) with C = 64, backward 2C(3K+2V) + 8KV — the same count
for every retention implementation, so TFLOP/s ratios are time ratios; decode 4KV per
(row, head) step; SDPA its causal count T²(K+V) per (row, head) forward and 3.5× that for
forward + backward (the backward's five products against the forward's two).

    python benchmarks/peers/compare.py --device cuda --dtype bf16 \\
        --shape 4,8,256,256,2048 --shape 8,32,128,128,16384
    python benchmarks/peers/compare.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

import retention

CHUNK = 64
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Shape:
    """Rows, heads, head dims and tokens."""

    b: int
    h: int
    k: int
    v: int
    t: int

    @staticmethod
    def parse(text: str) -> "Shape":
        parts = [int(x) for x in text.split(",")]
        if len(parts) != 5 or min(parts) < 1:
            raise argparse.ArgumentTypeError(f"shape wants B,H,K,V,T (positive): {text!r}")
        return Shape(*parts)


@dataclass
class Row:
    """One timed (shape, op, implementation)."""

    shape: dict
    op: str
    impl: str
    ms: float
    tflops: float
    peak_mib: Optional[float]
    ratio_vs_ours: Optional[float] = None
    max_rel_diff: Optional[float] = None
    notes: list = field(default_factory=list)


def gammas(h: int) -> torch.Tensor:
    return 1.0 - torch.exp2(-5.0 - torch.arange(h, dtype=torch.float64))


def retention_flops(s: Shape, backward: bool) -> float:
    per = 2 * CHUNK * (s.k + s.v) + 4 * s.k * s.v
    if backward:
        per += 2 * CHUNK * (3 * s.k + 2 * s.v) + 8 * s.k * s.v
    return float(s.b * s.h * s.t * per)


def attention_flops(s: Shape, backward: bool) -> float:
    fwd = s.b * s.h * s.t * s.t * (s.k + s.v)  # causal: half of 2·T²·(K+V)
    return float(fwd * (3.5 if backward else 1.0))


def eager_retention(q, k, v, scale=None):
    """The parallel form in PyTorch eager: o = (s·QKᵀ ⊙ D) V, D[n,m] = γ^(n−m) for n ≥ m."""
    b, t, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    n = torch.arange(t, device=q.device, dtype=torch.float64)
    dist = n[:, None] - n[None, :]
    log_g = torch.log(gammas(h).to(q.device))
    decay = torch.exp(log_g[:, None, None] * dist.clamp(min=0)) * (dist >= 0)
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    scores = (qh @ kh.transpose(-1, -2)) * scale * decay.to(q.dtype)
    return (scores @ vh).transpose(1, 2)


def sdpa(q, k, v):
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(1, 2)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeats: int) -> tuple[float, Optional[float]]:
    """Median milliseconds of `repeats` calls after one warm-up; peak MiB on CUDA."""
    fn()
    sync(device)
    peak = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return statistics.median(times), peak


def inputs(s: Shape, dtype, device, seed=0, grad=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(s.b, s.t, s.h, s.k, generator=g)
    k = torch.randn(s.b, s.t, s.h, s.k, generator=g) / s.k**0.5
    v = torch.randn(s.b, s.t, s.h, s.v, generator=g)
    out = [x.to(device=device, dtype=dtype).requires_grad_(grad) for x in (q, k, v)]
    return out


def forward_impls(device: str, fla) -> dict[str, Callable]:
    impls = {
        "ours chunk": lambda q, k, v: retention.chunk_retention(q, k, v, chunk_size=CHUNK)[0],
        "ours parallel": lambda q, k, v: retention.parallel_retention(q, k, v)[0],
    }
    if fla is not None:
        impls["fla chunk"] = lambda q, k, v: fla.chunk_retention(q, k, v)[0]
        impls["fla parallel"] = lambda q, k, v: fla.parallel_retention(q, k, v)[0]
    if device == "cpu":
        impls["torch eager"] = eager_retention
    return impls


def rel_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp(min=1e-30)).item()


def bench_shape(s: Shape, args, fla) -> list[Row]:
    rows = []
    dev, dtype = args.device, DTYPES[args.dtype]
    q, k, v = inputs(s, dtype, dev)
    if fla is not None:
        reference = fla.chunk_retention(q, k, v)[0].detach()
        ref_name = "fla chunk"
    else:
        q64, k64, v64 = (x.double() for x in (q, k, v))
        reference = eager_retention(q64, k64, v64)
        ref_name = "float64 eager"
    for backward in (False, True):
        op = "forward + backward" if backward else "forward"
        qg, kg, vg = inputs(s, dtype, dev, grad=backward)
        do = torch.randn_like(reference, dtype=dtype, device=dev) if backward else None
        for name, fn in forward_impls(dev, fla).items():
            def call(fn=fn):
                o = fn(qg, kg, vg)
                if backward:
                    o.backward(do)
                    for x in (qg, kg, vg):
                        x.grad = None
                return o

            ms, peak = timed(call, dev, args.repeats)
            o = fn(q, k, v).detach()
            rows.append(
                Row(asdict(s), op, name, ms, retention_flops(s, backward) / ms / 1e9,
                    peak, max_rel_diff=rel_diff(o, reference), notes=[f"vs {ref_name}"])
            )
        qa, ka, va = inputs(s, dtype, dev, grad=backward)
        if s.k == s.v:
            def attn():
                o = sdpa(qa, ka, va)
                if backward:
                    o.backward(torch.ones_like(o))
                return o

            ms, peak = timed(attn, dev, args.repeats)
            rows.append(Row(asdict(s), op, "torch sdpa (causal attention)", ms,
                            attention_flops(s, backward) / ms / 1e9, peak,
                            notes=["attention, not retention: time only"]))
    rows += bench_decode(s, args, fla)
    ours = {r.op: r.ms for r in rows if r.impl in ("ours chunk", "ours decode")}
    for r in rows:
        if r.op in ours:
            r.ratio_vs_ours = r.ms / ours[r.op]
    return rows


def bench_decode(s: Shape, args, fla) -> list[Row]:
    """`args.steps` single-token steps from a zero state, batch B, every head."""
    dev, dtype = args.device, DTYPES[args.dtype]
    one = Shape(s.b, s.h, s.k, s.v, args.steps)
    q, k, v = inputs(one, dtype, dev, seed=1)
    state0 = torch.zeros(s.b, s.h, s.k, s.v, dtype=torch.float32, device=dev)
    g = gammas(s.h).to(dev, torch.float32).view(1, s.h, 1, 1)
    scale = s.k**-0.5

    def ours():
        state = state0
        for t in range(args.steps):
            sl = slice(t, t + 1)
            o, state = retention.fused_recurrent_retention(
                q[:, sl], k[:, sl], v[:, sl], initial_state=state, output_final_state=True)
        return o

    def eager():
        state = state0
        for t in range(args.steps):
            kt, vt, qt = (x[:, t].float() for x in (k, v, q))
            state = g * state + kt.unsqueeze(-1) * vt.unsqueeze(-2)
            o = scale * torch.einsum("bhk,bhkv->bhv", qt, state)
        return o

    impls = {"ours decode": ours}
    if fla is not None:
        def fla_decode():
            state = state0
            for t in range(args.steps):
                sl = slice(t, t + 1)
                o, state = fla.fused_recurrent_retention(
                    q[:, sl], k[:, sl], v[:, sl], initial_state=state,
                    output_final_state=True)
            return o
        impls["fla fused_recurrent decode"] = fla_decode
    impls["torch eager decode"] = eager
    want = eager().double()
    rows = []
    flops = 4.0 * s.b * s.h * s.k * s.v * args.steps
    for name, fn in impls.items():
        ms, peak = timed(fn, dev, args.repeats)
        got = fn().reshape(want.shape)
        rows.append(Row(asdict(s), f"decode x{args.steps}", name, ms, flops / ms / 1e9, peak,
                        max_rel_diff=rel_diff(got, want), notes=["vs f32 eager recurrence"]))
    for r in rows:
        r.op = "decode"
    return rows


def load_fla(device: str):
    if device != "cuda":
        return None
    try:
        import fla.ops.retention as fla_ops  # noqa: PLC0415 (optional peer)
    except ImportError as err:
        print(f"fla not measured: {err}", file=sys.stderr)
        return None
    return fla_ops


def print_table(rows: list[Row], device: str) -> None:
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"# peers on {name}, torch {torch.__version__}")
    print(f"{'shape B,H,K,V,T':<22}{'op':<20}{'impl':<32}{'ms':>10}{'TFLOP/s':>9}"
          f"{'peak MiB':>10}{'peer/ours':>10}{'rel diff':>10}")
    for r in rows:
        s = r.shape
        shape = f"{s['b']},{s['h']},{s['k']},{s['v']},{s['t']}"
        peak = "-" if r.peak_mib is None else f"{r.peak_mib:.0f}"
        ratio = "-" if r.ratio_vs_ours is None else f"{r.ratio_vs_ours:.2f}"
        diff = "-" if r.max_rel_diff is None else f"{r.max_rel_diff:.1e}"
        print(f"{shape:<22}{r.op:<20}{r.impl:<32}{r.ms:>10.3f}{r.tflops:>9.3g}"
              f"{peak:>10}{ratio:>10}{diff:>10}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="bf16 on CUDA, f32 on the CPU by default")
    p.add_argument("--shape", type=Shape.parse, action="append",
                   help="B,H,K,V,T (repeatable)")
    p.add_argument("--steps", type=int, default=64, help="decode steps per timed call")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="one small shape, few repeats (CI)")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "f32")
    if args.quick:
        args.shape = args.shape or [Shape(1, 2, 32, 32, 256)]
        args.steps, args.repeats = min(args.steps, 8), min(args.repeats, 3)
    shapes = args.shape or [Shape(4, 8, 256, 256, 2048), Shape(8, 32, 128, 128, 16384)]
    fla = load_fla(args.device)
    rows = [r for s in shapes for r in bench_shape(s, args, fla)]
    print_table(rows, args.device)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
