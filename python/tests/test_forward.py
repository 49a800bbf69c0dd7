"""Forward of every form against the float64 reference (tests/reference.py), on fla's test
shapes: K = 60 and 100, varlen cu_seqlens, chunk 16, 32, 64, T not a multiple of the chunk,
an initial state, a non-default scale, explicit decays and a head offset."""

import pytest
import torch

import retention
from reference import assert_close, inputs, retnet_gammas, retention as ref, retention_varlen

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk", [16, 32, 64])
@pytest.mark.parametrize("dk,dv", [(60, 60), (100, 64)])
def test_chunk_matches_reference(dtype, chunk, dk, dv):
    b, t, h = 2, 75, 3
    q, k, v = inputs(b, t, h, dk, dv, dtype)
    h0 = torch.randn(b, h, dk, dv)
    o, ht = retention.chunk_retention(q, k, v, initial_state=h0, output_final_state=True,
                                      chunk_size=chunk)
    ro, rht = ref(q, k, v, retnet_gammas(h), None, h0)
    assert o.dtype == dtype and o.shape == (b, t, h, dv)
    assert ht.dtype == torch.float32 and ht.shape == (b, h, dk, dv)
    assert_close(o, ro, dtype, "o")
    # The state is f32 from exact (widened) inputs whatever their dtype (ARCHITECTURE §4).
    assert_close(ht, rht, torch.float32, "final state")


@pytest.mark.parametrize("dtype", DTYPES)
def test_recurrent_and_parallel_match_reference(dtype):
    b, t, h, dk, dv = 2, 33, 2, 60, 32
    q, k, v = inputs(b, t, h, dk, dv, dtype, seed=1)
    ro, rht = ref(q, k, v, retnet_gammas(h), 0.3)
    o, ht = retention.fused_recurrent_retention(q, k, v, scale=0.3, output_final_state=True)
    assert_close(o, ro, dtype, "recurrent o")
    assert_close(ht, rht, dtype, "recurrent final state")
    po, attn = retention.parallel_retention(q, k, v, scale=0.3)
    assert attn is None
    assert_close(po, ro, dtype, "parallel o")


def test_no_final_state_unless_asked():
    q, k, v = inputs(1, 8, 2, 16, 16)
    _, ht = retention.chunk_retention(q, k, v)
    assert ht is None


@pytest.mark.parametrize("chunk", [16, 32, 64])
@pytest.mark.parametrize("form", ["chunk", "recurrent", "parallel"])
def test_varlen_matches_each_sequence(chunk, form):
    h, dk, dv = 2, 100, 48
    cu = torch.tensor([0, 15, 15 + 64, 15 + 64 + 100], dtype=torch.long)
    q, k, v = inputs(1, int(cu[-1]), h, dk, dv, seed=2)
    h0 = None if form == "parallel" else torch.randn(3, h, dk, dv)
    ro, rht = retention_varlen(q, k, v, cu, retnet_gammas(h), None, h0)
    if form == "chunk":
        o, ht = retention.chunk_retention(q, k, v, initial_state=h0, output_final_state=True,
                                          cu_seqlens=cu, chunk_size=chunk)
    elif form == "recurrent":
        o, ht = retention.fused_recurrent_retention(q, k, v, initial_state=h0,
                                                    output_final_state=True, cu_seqlens=cu)
    else:
        o, ht = retention.parallel_retention(q, k, v, cu_seqlens=cu)
    assert_close(o, ro, torch.float32, "varlen o")
    if ht is not None:
        assert_close(ht, rht, torch.float32, "varlen final states")


def test_explicit_gammas_and_head_offset():
    b, t, h, dk, dv = 1, 40, 4, 32, 32
    q, k, v = inputs(b, t, h, dk, dv, seed=3)
    # A shard holding global heads 4..7 gets those heads' decays (PITFALLS #9).
    o, _ = retention.chunk_retention(q, k, v, head_offset=4)
    assert_close(o, ref(q, k, v, retnet_gammas(h, 4))[0], torch.float32, "head offset")
    g = torch.tensor([0.5, 0.9, 0.99, 0.999], dtype=torch.float64)
    o, _ = retention.chunk_retention(q, k, v, gammas=g, chunk_size=16)
    assert_close(o, ref(q, k, v, g)[0], torch.float32, "explicit gammas")


def test_non_contiguous_inputs():
    q, k, v = inputs(2, 20, 3, 16, 16, seed=4)
    qt = q.transpose(0, 1).contiguous().transpose(0, 1)  # same values, not contiguous
    assert not qt.is_contiguous()
    o, _ = retention.chunk_retention(qt, k, v, chunk_size=16)
    assert_close(o, ref(q, k, v, retnet_gammas(3))[0], torch.float32, "non-contiguous q")


def test_rms_norm_swish_gate():
    from reference import norm_gate
    x, g, _ = inputs(2, 5, 3, 24, 24, seed=5)
    y = retention.rms_norm_swish_gate(x, g, eps=1e-6)
    assert_close(y, norm_gate(x, g, 1e-6), torch.float32, "rms_norm_swish_gate")
    w = torch.linspace(0.5, 1.5, 24)
    yw = retention.rms_norm_swish_gate(x, g, weight=w, eps=1e-6)
    assert_close(yw, norm_gate(x, g, 1e-6) * w.double(), torch.float32, "with weight")
