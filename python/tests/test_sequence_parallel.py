"""Sequence parallelism on torch.distributed (gloo, CPU processes): T split over 2–4 ranks,
states handed on forward and dh0 → dht handed back, equals one process over the whole T."""

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import retention
from retention.sequence_parallel import SequenceShard

B, T, H, K, V = 2, 45, 3, 16, 24
CHUNK = 8  # does not divide the ranks' slice lengths: C ∤ T on every rank
# f32 kernels; the split only moves where state rounding happens. Relative to the largest
# magnitude of each tensor.
TOL = 2e-5


def _problem():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(B, T, H, K, generator=g)
    k = torch.randn(B, T, H, K, generator=g) / K**0.5
    v = torch.randn(B, T, H, V, generator=g)
    h0 = torch.randn(B, H, K, V, generator=g)
    do = torch.randn(B, T, H, V, generator=g)
    dht = torch.randn(B, H, K, V, generator=g)
    return q, k, v, h0, do, dht


def _slices(world):
    return [s.tolist() for s in torch.tensor_split(torch.arange(T), world)]


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        q, k, v, h0, do, dht = _problem()
        idx = _slices(world)[rank]
        lo, hi = idx[0], idx[-1] + 1
        ql, kl, vl = (x[:, lo:hi].clone().requires_grad_(True) for x in (q, k, v))
        shard = SequenceShard()
        o, ht = shard.forward(
            ql, kl, vl, initial_state=h0, chunk_size=CHUNK, head_offset=2
        )
        dh0 = shard.backward(do[:, lo:hi], dht=dht)
        torch.save(
            {
                "o": o.detach(),
                "ht": ht.detach(),
                "dq": ql.grad,
                "dk": kl.grad,
                "dv": vl.grad,
                "dh0": dh0,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _single_process():
    q, k, v, h0, do, dht = _problem()
    q, k, v, h0 = (x.clone().requires_grad_(True) for x in (q, k, v, h0))
    o, ht = retention.chunk_retention(
        q,
        k,
        v,
        initial_state=h0,
        output_final_state=True,
        chunk_size=CHUNK,
        head_offset=2,
    )
    torch.autograd.backward([o, ht], [do, dht])
    return o.detach(), ht.detach(), q.grad, k.grad, v.grad, h0.grad


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("world", [2, 4])
def test_split_sequence_equals_one_process(world):
    with tempfile.TemporaryDirectory() as out_dir:
        init_file = os.path.join(out_dir, "rendezvous")
        mp.spawn(_worker, args=(world, init_file, out_dir), nprocs=world, join=True)
        ranks = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]
    o, ht, dq, dk, dv, dh0 = _single_process()
    for name, want in (("o", o), ("dq", dq), ("dk", dk), ("dv", dv)):
        got = torch.cat([r[name] for r in ranks], dim=1)
        assert got.shape == want.shape
        assert _rel(got, want) <= TOL, f"{name} world={world}: {_rel(got, want):e}"
    assert _rel(ranks[-1]["ht"], ht) <= TOL
    assert _rel(ranks[0]["dh0"], dh0) <= TOL
    for r in ranks[1:]:
        assert r["dh0"] is None
