"""Replacing ``from fla.ops.retention import …`` with ``from retention import …`` is a one-line
change: our ops take fla's parameters in fla's order (fla-core's signatures, written out here
since fla needs triton and a GPU), ours added after them, and positional calls in fla's
order give the same result as keyword calls."""

import inspect

import torch

import retention
from reference import assert_close, inputs

FLA = {
    "chunk_retention": ["q", "k", "v", "scale", "initial_state", "output_final_state",
                        "cu_seqlens"],
    "fused_recurrent_retention": ["q", "k", "v", "scale", "initial_state",
                                  "output_final_state", "reverse", "cu_seqlens"],
    "parallel_retention": ["q", "k", "v", "scale", "output_attentions", "cu_seqlens"],
}


def test_parameters_in_fla_order():
    for name, params in FLA.items():
        ours = list(inspect.signature(getattr(retention, name)).parameters)
        assert ours[: len(params)] == params, (name, ours)


def test_positional_fla_calls():
    q, k, v = inputs(1, 24, 2, 16, 8, seed=9)
    h0 = torch.randn(1, 2, 16, 8)
    o1, s1 = retention.chunk_retention(q, k, v, 0.5, h0, True, None)
    o2, s2 = retention.chunk_retention(q, k, v, scale=0.5, initial_state=h0,
                                       output_final_state=True)
    assert torch.equal(o1, o2) and torch.equal(s1, s2)
    o3, s3 = retention.fused_recurrent_retention(q, k, v, 0.5, h0, True, False, None)
    assert_close(o3, o1, torch.float32, "recurrent vs chunk")
    assert_close(s3, s1, torch.float32, "recurrent vs chunk state")
    o4, attn = retention.parallel_retention(q, k, v, 0.5, False, None)
    assert attn is None
    o5, _ = retention.chunk_retention(q, k, v, 0.5)
    assert_close(o4, o5, torch.float32, "parallel vs chunk")
