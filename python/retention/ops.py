"""The public ops, with fla's signatures where they overlap (``fla.ops.retention``): q, k
``[B, T, H, K]``, v ``[B, T, H, V]``, states ``[N, H, K, V]`` float32, returning
``(o, final_state)``. Ours add ``chunk_size``, ``gammas`` (per-head decays, learnable) and
``head_offset`` (the RetNet decays of a head shard, PITFALLS #9)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _checks, _ops


def _stateful(q, k, v, scale, initial_state, output_final_state, cu_seqlens, chunk,
              gammas, head_offset):
    b, _, h, dk, dv = _checks.qkv(q, k, v)
    cu = _checks.cu_seqlens(cu_seqlens, b)
    rows = b if cu is None else cu.shape[0] - 1
    h0 = _checks.initial_state(initial_state, rows, h, dk, dv, q.device)
    g = _checks.gammas(gammas, h, q.device)
    offset = _checks.positive_int("head_offset", head_offset, 0)
    o, ht = _ops.stateful_fwd(q, k, v, h0, g, offset, _checks.scale(scale), chunk, cu)
    return o, (ht if output_final_state else None)


def chunk_retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[Tensor] = None,
    chunk_size: int = 64,
    gammas: Optional[Tensor] = None,
    head_offset: int = 0,
    *,
    head_first: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Chunkwise retention: ``(o [B, T, H, V], final_state [N, H, K, V] or None)``.

    ``scale`` defaults to K^-1/2; ``cu_seqlens`` ``[N+1]`` packs N sequences as B = 1;
    ``gammas`` ``[H]`` are per-head decays in (0, 1) (default: RetNet's
    1 − 2^(−5−h) over global heads ``head_offset..``)."""
    if head_first:
        raise ValueError("head_first is not supported: pass q, k, v as [B, T, H, ·]")
    chunk = _checks.positive_int("chunk_size", chunk_size, 1)
    return _stateful(q, k, v, scale, initial_state, output_final_state, cu_seqlens, chunk,
                     gammas, head_offset)


def fused_recurrent_retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: Optional[float] = None,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: Optional[Tensor] = None,
    gammas: Optional[Tensor] = None,
    head_offset: int = 0,
) -> tuple[Tensor, Optional[Tensor]]:
    """Recurrent (token-by-token) retention; same results as ``chunk_retention``."""
    if reverse:
        raise ValueError("reverse=True is not supported")
    return _stateful(q, k, v, scale, initial_state, output_final_state, cu_seqlens, 0,
                     gammas, head_offset)


def parallel_retention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: Optional[float] = None,
    output_attentions: bool = False,
    cu_seqlens: Optional[Tensor] = None,
    gammas: Optional[Tensor] = None,
    head_offset: int = 0,
) -> tuple[Tensor, None]:
    """Parallel retention: ``(o, None)``. With ``cu_seqlens`` the chunkwise varlen form
    computes the same function (no initial state)."""
    if output_attentions:
        raise ValueError("output_attentions=True is not supported (scores are never stored)")
    if cu_seqlens is not None:
        return _stateful(q, k, v, scale, None, False, cu_seqlens, 64, gammas, head_offset)
    _, _, h, _, _ = _checks.qkv(q, k, v)
    g = _checks.gammas(gammas, h, q.device)
    offset = _checks.positive_int("head_offset", head_offset, 0)
    return _ops.parallel_fwd(q, k, v, g, offset, _checks.scale(scale)), None


def rms_norm_swish_gate(
    x: Tensor,
    g: Tensor,
    weight: Optional[Tensor] = None,
    eps: float = 1e-6,
) -> Tensor:
    """``RMSNorm_head(x) ⊙ swish(g)`` over the last axis of ``x``, ``g`` ``[B, T, H, V]``
    (the MultiScaleRetention output before W_O); ``weight`` ``[V]`` scales the normalised
    value (CPU tensors)."""
    x = _checks.tensor("x", x, 4, "[B, T, H, V]")
    g = _checks.tensor("g", g, 4, "[B, T, H, V]")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16) or g.dtype != x.dtype:
        raise TypeError(f"`x`, `g` must share a float32/float16/bfloat16 dtype, got {x.dtype}, {g.dtype}")
    if x.shape != g.shape:
        raise ValueError(f"`g` must have the shape of `x` {list(x.shape)}, got {list(g.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"`eps` must be a finite float ≥ 0, got {eps!r}")
    y = _ops.norm_gate_fwd(x, g, float(eps))
    return y if weight is None else y * weight
