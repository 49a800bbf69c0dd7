"""A float64 PyTorch implementation of retention (ARCHITECTURE §1), written from the math,
differentiable by autograd in every input including the decays: the oracle of these tests."""

from __future__ import annotations

import torch


def retnet_gammas(heads: int, head_offset: int = 0) -> torch.Tensor:
    h = torch.arange(head_offset, head_offset + heads, dtype=torch.float64)
    return 1.0 - torch.pow(2.0, -5.0 - h)


def retention(q, k, v, gammas, scale=None, h0=None):
    """(o [B,T,H,V], H_T [B,H,K,V]) in float64 for q, k [B,T,H,K], v [B,T,H,V]."""
    q, k, v = q.double(), k.double(), v.double()
    b, t, h, dk = q.shape
    s = dk ** -0.5 if scale is None else scale
    g = gammas.double()
    pos = torch.arange(t, dtype=torch.float64)
    diff = pos[:, None] - pos[None, :]                      # (T, T): n − m
    causal = diff >= 0
    decay = torch.where(causal, g[:, None, None] ** diff.clamp(min=0), torch.zeros(()).double())
    scores = torch.einsum("bnhk,bmhk->bhnm", q * s, k) * decay  # (B, H, T, T)
    o = torch.einsum("bhnm,bmhv->bnhv", scores, v)
    tail = g[None, :] ** (t - 1 - pos[:, None])              # (T, H): γ^(T−1−m)
    ht = torch.einsum("bmhk,bmhv,mh->bhkv", k, v, tail)
    if h0 is not None:
        h0 = h0.double()
        lead = g[None, :] ** (pos[:, None] + 1)               # (T, H): γ^(t+1)
        o = o + torch.einsum("bthk,bhkv,th->bthv", q * s, h0, lead)
        ht = ht + (g ** t)[None, :, None, None] * h0
    return o, ht


def retention_varlen(q, k, v, cu_seqlens, gammas, scale=None, h0=None):
    """Packed [1, ΣT, H, ·] with N sequences: each one alone, outputs concatenated."""
    outs, states = [], []
    bounds = cu_seqlens.tolist()
    for n in range(len(bounds) - 1):
        a, e = bounds[n], bounds[n + 1]
        o, ht = retention(q[:, a:e], k[:, a:e], v[:, a:e], gammas, scale,
                          None if h0 is None else h0[n:n + 1])
        outs.append(o)
        states.append(ht)
    return torch.cat(outs, dim=1), torch.cat(states, dim=0)


def norm_gate(x, g, eps):
    x, g = x.double(), g.double()
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y * g * torch.sigmoid(g)


def dlog_gamma_terms(q, k, v, gammas, scale, h0, d_o, d_ht):
    """Per head, Σ |γ⟨G_t, S_{t−1}⟩| over rows and tokens (G_t the adjoint of S_t): the
    magnitude the d log γ tolerance is relative to (ARCHITECTURE §7)."""
    q, k, v, d_o = q.double(), k.double(), v.double(), d_o.double()
    b, t, h, dk = q.shape
    s = dk ** -0.5 if scale is None else scale
    g = gammas.double()[None, :, None, None]
    state = torch.zeros(b, h, dk, v.shape[-1], dtype=torch.float64) if h0 is None else h0.double()
    prev = [state]
    for i in range(t):
        state = g * state + torch.einsum("bhk,bhv->bhkv", k[:, i], v[:, i])
        prev.append(state)
    adj = torch.zeros_like(state) if d_ht is None else d_ht.double().clone()
    total = torch.zeros(h, dtype=torch.float64)
    for i in reversed(range(t)):
        adj = adj + s * torch.einsum("bhk,bhv->bhkv", q[:, i], d_o[:, i])
        total += (g * adj * prev[i]).sum(dim=(2, 3)).abs().sum(0)
        adj = g * adj
    return total


def max_rel(got, ref) -> float:
    """Largest |got − ref| over the largest |ref| (ARCHITECTURE §4's f32 metric)."""
    got, ref = got.double(), ref.double()
    return ((got - ref).abs().max() / ref.abs().max().clamp(min=1e-300)).item()


def rel_rmse(got, ref) -> float:
    """RMS of got − ref over the RMS of ref (ARCHITECTURE §4's 16-bit metric)."""
    got, ref = got.double(), ref.double()
    return (((got - ref) ** 2).sum() / (ref ** 2).sum().clamp(min=1e-300)).sqrt().item()


# ARCHITECTURE §4: f32 within 1e-5 max relative; f16/bf16 within 5e-3 relative RMSE.
F32_TOL = 1e-5
HALF_TOL = 5e-3


def assert_close(got, ref, dtype, what: str) -> None:
    if dtype == torch.float32:
        err = max_rel(got, ref)
        assert err <= F32_TOL, f"{what}: max relative error {err:.3e} > {F32_TOL}"
    else:
        err = rel_rmse(got, ref)
        assert err <= HALF_TOL, f"{what}: relative RMSE {err:.3e} > {HALF_TOL}"


def inputs(b, t, h, dk, dv, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, h, dk, generator=gen).to(dtype)
    k = torch.randn(b, t, h, dk, generator=gen).to(dtype)
    v = torch.randn(b, t, h, dv, generator=gen).to(dtype)
    return q, k, v
