"""StatePool serving: prefill then decode token by token from slots (continuous batching)
equals one chunkwise pass over the whole sequence (PITFALLS #12); snapshot and restore."""

import torch

import retention
from reference import assert_close, inputs, retnet_gammas, retention as ref


def test_prefill_then_decode_equals_one_pass():
    h, dk, dv, t0, steps = 2, 16, 24, 20, 5
    pool = retention.StatePool(heads=h, dk=dk, dv=dv, layers=1, capacity=3)
    a, b = pool.alloc(), pool.alloc()
    seqs = [inputs(1, t0 + steps, h, dk, dv, seed=s) for s in (0, 1)]
    outs = [[], []]
    for i, (slot, (q, k, v)) in enumerate(zip((a, b), seqs)):
        outs[i].append(pool.prefill(0, slot, q[:, :t0], k[:, :t0], v[:, :t0], chunk_size=8))
    for s in range(t0, t0 + steps):
        order = (b, a) if s % 2 else (a, b)          # rows in any slot order
        idx = [1, 0] if s % 2 else [0, 1]
        q = torch.stack([seqs[i][0][0, s] for i in idx])
        k = torch.stack([seqs[i][1][0, s] for i in idx])
        v = torch.stack([seqs[i][2][0, s] for i in idx])
        o = pool.step(0, list(order), q, k, v)
        for row, i in enumerate(idx):
            outs[i].append(o[row][None, None])
    for i, (q, k, v) in enumerate(seqs):
        got = torch.cat(outs[i], dim=1)
        assert_close(got, ref(q, k, v, retnet_gammas(h))[0], torch.float32, f"sequence {i}")
    assert pool.in_use == 2


def test_snapshot_restore_round_trip():
    pool = retention.StatePool(heads=2, dk=8, dv=8, layers=2, capacity=2)
    a, b = pool.alloc(), pool.alloc()
    q, k, v = inputs(1, 10, 2, 8, 8)
    pool.prefill(1, a, q, k, v)
    snap = pool.snapshot(a)
    assert snap.shape == (2, 2, 8, 8) and snap[0].abs().sum() == 0 and snap[1].abs().sum() > 0
    pool.restore(b, snap)
    assert torch.equal(pool.snapshot(b), snap)
    pool.reset(a)
    assert pool.snapshot(a).abs().sum() == 0
