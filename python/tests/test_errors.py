"""Bad input raises TypeError or ValueError with a message naming what is wrong — never a
crash (ARCHITECTURE §6). Some are caught by the Python checks, the rest by the runtime's
typed errors mapped to the same exceptions."""

import pytest
import torch

import retention
from reference import inputs


def q_k_v(**kw):
    return inputs(1, 8, 2, 16, 16, **kw)


@pytest.mark.parametrize("call,exc,msg", [
    (lambda q, k, v: retention.chunk_retention(q.tolist(), k, v), TypeError, "`q` must be a torch.Tensor"),
    (lambda q, k, v: retention.chunk_retention(q.double(), k.double(), v.double()), TypeError, "float64"),
    (lambda q, k, v: retention.chunk_retention(q, k.half(), v), TypeError, "`k` has dtype"),
    (lambda q, k, v: retention.chunk_retention(q[0], k, v), ValueError, "[B, T, H, K]"),
    (lambda q, k, v: retention.chunk_retention(q, k[:, :, :1], v), ValueError, "`k` must be"),
    (lambda q, k, v: retention.chunk_retention(q, k, v[:, :4]), ValueError, "`v` must be"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, chunk_size=0), ValueError, "chunk_size"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, chunk_size=2.5), TypeError, "chunk_size"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, scale="x"), TypeError, "scale"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, scale=float("nan")), ValueError, "scale"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, gammas=[0.5, 1.0]), ValueError, "gamma"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, gammas=[0.5]), ValueError, "gammas"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, head_offset=-1), ValueError, "head_offset"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, initial_state=torch.zeros(1, 2, 16, 8)), ValueError, "initial_state"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, cu_seqlens=torch.tensor([0, 3, 2, 8])), ValueError, "monotone"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, cu_seqlens=torch.tensor([0, 3, 7])), ValueError, "ends at 7"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, cu_seqlens=torch.tensor([0.0, 8.0])), TypeError, "cu_seqlens"),
    (lambda q, k, v: retention.chunk_retention(q, k, v, head_first=True), ValueError, "head_first"),
    (lambda q, k, v: retention.fused_recurrent_retention(q, k, v, reverse=True), ValueError, "reverse"),
    (lambda q, k, v: retention.parallel_retention(q, k, v, output_attentions=True), ValueError, "output_attentions"),
    (lambda q, k, v: retention.rms_norm_swish_gate(q, k[..., :8]), ValueError, "shape"),
])
def test_bad_input_raises(call, exc, msg):
    q, k, v = q_k_v()
    with pytest.raises(exc) as e:
        call(q, k, v)
    assert msg in str(e.value)


def test_varlen_needs_packed_batch():
    q, k, v = inputs(2, 8, 2, 16, 16)
    with pytest.raises(ValueError, match="packed"):
        retention.chunk_retention(q, k, v, cu_seqlens=torch.tensor([0, 8]))


def test_zero_length_axes_raise():
    q, k, v = inputs(1, 0, 2, 16, 16)
    with pytest.raises(ValueError, match="T"):
        retention.chunk_retention(q, k, v)


def test_pool_misuse_raises():
    pool = retention.StatePool(heads=2, dk=8, dv=8, layers=1, capacity=1)
    s = pool.alloc()
    with pytest.raises(ValueError):
        pool.alloc()  # full
    pool.free(s)
    with pytest.raises(ValueError):
        pool.reset(s)  # stale handle
    s2 = pool.alloc()
    q = torch.randn(1, 2, 8)
    with pytest.raises(ValueError):
        pool.step(3, [s2], q, q, q)  # no layer 3
    with pytest.raises(ValueError):
        pool.step(0, [s2], torch.randn(1, 3, 8), q, q)  # wrong H
    with pytest.raises(TypeError):
        pool.step(0, [s2], q.double(), q, q)
    with pytest.raises(ValueError):
        retention.StatePool(heads=0, dk=8, dv=8)


def test_native_layer_checks_what_it_is_given():
    """Even a direct call of the private native module with wrong tensors raises."""
    from retention import _native
    from retention._native_call import decays
    q, k, v = q_k_v()
    o, ht = torch.empty(1, 8, 2, 16), torch.empty(1, 2, 16, 16)
    d = decays(None, 0, None)
    with pytest.raises(TypeError, match="torch.Tensor"):
        _native.stateful_forward([1.0], k, v, None, o, ht, d, 4, None)
    with pytest.raises(ValueError, match="contiguous"):
        _native.stateful_forward(q.transpose(1, 2), k, v, None, o, ht, d, 4, None)
    with pytest.raises(TypeError, match="int32"):
        _native.stateful_forward(q.int(), k, v, None, o, ht, d, 4, None)
    with pytest.raises(ValueError, match="meta"):
        _native.stateful_forward(q.to("meta"), k, v, None, o, ht, d, 4, None)
    with pytest.raises(ValueError, match="shape mismatch for `o`"):
        _native.stateful_forward(q, k, v, None, o[:, :4].contiguous(), ht, d, 4, None)
    with pytest.raises(TypeError, match="final_state"):
        _native.stateful_forward(q, k, v, None, o, ht.half(), d, 4, None)
