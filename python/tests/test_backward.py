"""Gradients through our backward kernels against float64 autograd of the reference
(tests/reference.py): dq, dk, dv, dh0 and the decays' gradient, for every form, fla's test
shapes, varlen; and ``torch.autograd.gradcheck`` on tiny shapes.

gradcheck runs on float32: the kernels take float32/float16/bfloat16, never float64, so a
float64 input is refused (TypeError) rather than silently narrowed. o is linear in each
single element of q, k, v and h0, so central differences are exact up to f32 rounding and a
large step (eps = 1e-2) keeps that rounding small; the decays, the one non-linear input,
get a smaller step and their own check."""

import pytest
import torch

import retention
from reference import (F32_TOL, assert_close, dlog_gamma_terms, inputs, retnet_gammas,
                       retention as ref, retention_varlen)


def _leaves(*ts):
    return [t.detach().clone().requires_grad_(True) for t in ts]


def _run(form, q, k, v, h0, g, cu, chunk):
    if form == "chunk":
        return retention.chunk_retention(q, k, v, initial_state=h0, output_final_state=True,
                                         cu_seqlens=cu, chunk_size=chunk, gammas=g)
    if form == "recurrent":
        return retention.fused_recurrent_retention(q, k, v, initial_state=h0,
                                                   output_final_state=True, cu_seqlens=cu,
                                                   gammas=g)
    return retention.parallel_retention(q, k, v, cu_seqlens=cu, gammas=g)


def _check_grads(form, b, t, h, dk, dv, chunk=64, cu=None, with_h0=True, seed=0):
    q, k, v = inputs(b, t, h, dk, dv, seed=seed)
    rows = b if cu is None else len(cu) - 1
    h0 = torch.randn(rows, h, dk, dv) if with_h0 and form != "parallel" else None
    gam = torch.tensor([0.9, 0.97, 0.995][:h], dtype=torch.float64)
    d_o = torch.randn(b, t, h, dv)
    d_ht = torch.randn(rows, h, dk, dv) if form != "parallel" else None

    ours = _leaves(q, k, v) + ([*_leaves(h0)] if h0 is not None else []) + _leaves(gam)
    o, ht = _run(form, *ours[:3], ours[3] if h0 is not None else None, ours[-1], cu, chunk)
    loss = (o * d_o).sum() + ((ht * d_ht).sum() if ht is not None else 0)
    loss.backward()

    theirs = _leaves(q.double(), k.double(), v.double()) + \
        ([*_leaves(h0.double())] if h0 is not None else []) + _leaves(gam)
    rh0 = theirs[3] if h0 is not None else None
    if cu is None:
        ro, rht = ref(*theirs[:3], theirs[-1], None, rh0)
    else:
        ro, rht = retention_varlen(*theirs[:3], cu, theirs[-1], None, rh0)
    rloss = (ro * d_o.double()).sum() + ((rht * d_ht.double()).sum() if ht is not None else 0)
    rloss.backward()

    for name, a, r in zip(["dq", "dk", "dv", "dh0"], ours[:-1], theirs[:-1]):
        assert_close(a.grad, r.grad, torch.float32, f"{form} {name}")
    # d log γ is one reduction whose terms can cancel: within 1e-5 of the sum of its terms'
    # magnitudes (ARCHITECTURE §7), compared as d log γ = γ · dL/dγ.
    if cu is None:
        mag = dlog_gamma_terms(q, k, v, gam, None, h0, d_o, d_ht)
        got = (ours[-1].grad * gam).double()
        want = (theirs[-1].grad * gam).double()
        assert ((got - want).abs() <= F32_TOL * mag).all(), (got, want, mag)


@pytest.mark.parametrize("chunk", [16, 32, 64])
@pytest.mark.parametrize("dk", [60, 100])
def test_chunk_gradients(chunk, dk):
    _check_grads("chunk", 2, 70, 3, dk, 40, chunk=chunk)


@pytest.mark.parametrize("form", ["recurrent", "parallel"])
def test_other_forms_gradients(form):
    _check_grads(form, 2, 37, 2, 60, 24, seed=1)


def test_chunk_gradients_without_initial_state():
    _check_grads("chunk", 1, 50, 3, 32, 32, chunk=16, with_h0=False, seed=2)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_varlen_gradients(form):
    cu = torch.tensor([0, 20, 21, 90], dtype=torch.long)
    _check_grads(form, 1, 90, 2, 100, 32, chunk=32, cu=cu, seed=3)


def test_16bit_gradients_follow_the_input_dtype():
    q, k, v = inputs(1, 40, 2, 32, 32, torch.bfloat16, seed=4)
    q, k, v = _leaves(q, k, v)
    o, _ = retention.chunk_retention(q, k, v, chunk_size=16)
    d_o = torch.randn(o.shape)
    (o.float() * d_o).sum().backward()
    rq, rk, rv = _leaves(q.double(), k.double(), v.double())
    (ref(rq, rk, rv, retnet_gammas(2))[0] * d_o.double()).sum().backward()
    for a, r, n in ((q, rq, "dq"), (k, rk, "dk"), (v, rv, "dv")):
        assert a.grad.dtype == torch.bfloat16
        assert_close(a.grad, r.grad, torch.bfloat16, n)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")  # float32 by design (module doc)
def test_gradcheck_qkv_h0():
    q, k, v = inputs(1, 6, 2, 4, 3, seed=5)
    h0 = torch.randn(1, 2, 4, 3)
    args = _leaves(q, k, v, h0)

    def f(q, k, v, h0):
        o, ht = retention.chunk_retention(q, k, v, initial_state=h0, output_final_state=True,
                                          chunk_size=4)
        return o, ht

    assert torch.autograd.gradcheck(f, args, eps=1e-2, atol=1e-3, rtol=1e-3)

    def p(q, k, v):
        return retention.parallel_retention(q, k, v)[0]

    assert torch.autograd.gradcheck(p, args[:3], eps=1e-2, atol=1e-3, rtol=1e-3)


@pytest.mark.filterwarnings("ignore:Input #:UserWarning")
def test_gradcheck_gammas():
    q, k, v = inputs(1, 6, 2, 4, 3, seed=6)
    g = torch.tensor([0.8, 0.95], dtype=torch.float32, requires_grad=True)

    def f(g):
        return retention.fused_recurrent_retention(q, k, v, gammas=g)[0]

    assert torch.autograd.gradcheck(f, (g,), eps=1e-3, atol=1e-3, rtol=1e-2)


def test_rms_norm_swish_gate_gradients():
    from reference import norm_gate
    x, g, _ = inputs(2, 5, 3, 24, 24, seed=7)
    x, g = _leaves(x, g)
    dy = torch.randn(x.shape)
    (retention.rms_norm_swish_gate(x, g) * dy).sum().backward()
    rx, rg = _leaves(x.double(), g.double())
    (norm_gate(rx, rg, 1e-6) * dy.double()).sum().backward()
    assert_close(x.grad, rx.grad, torch.float32, "dx")
    assert_close(g.grad, rg.grad, torch.float32, "dg")
