"""What crosses into ``retention._native`` besides tensors (python/src/raw.rs reads a
contiguous ``torch.Tensor`` itself: data pointer, dtype, shape, device)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Backward(NamedTuple):
    """The tensors of one backward call as python/src/backward.rs reads them."""

    q: Tensor
    k: Tensor
    v: Tensor
    h0: Optional[Tensor]
    d_o: Tensor
    d_ht: Optional[Tensor]
    dq: Tensor
    dk: Tensor
    dv: Tensor
    dh0: Optional[Tensor]
    dlog_gamma: Optional[Tensor]


class Decays(NamedTuple):
    """Decays and scale as python/src/problem.rs reads them (by attribute)."""

    gammas: Optional[list]
    head_offset: int
    scale: Optional[float]


def decays(gammas: Tensor | None, head_offset: int, scale: float | None) -> Decays:
    """Per-head decays as the f64 list the runtime validates (``None``: the RetNet decays
    of global heads ``head_offset..``), with the scale."""
    if gammas is not None:
        gammas = gammas.detach().to(device="cpu", dtype=torch.float64).reshape(-1).tolist()
    return Decays(gammas, head_offset, scale)


def bounds(cu_seqlens: Tensor | None) -> list[int] | None:
    """``cu_seqlens`` as a list of ints (validated by the runtime)."""
    if cu_seqlens is None:
        return None
    return [int(b) for b in cu_seqlens.detach().cpu().reshape(-1).tolist()]
