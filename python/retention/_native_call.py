"""How torch tensors cross into ``retention._native`` (see python/src/raw.rs).

A tensor crosses as ``(data_ptr, dtype name, shape)`` of a *contiguous* tensor that the
caller keeps referenced until the native call returns; ``raw`` makes the tensor contiguous
first and the callers here hold the contiguous copies in local variables for the call.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Raw(NamedTuple):
    """What python/src/raw.rs reads (by attribute)."""

    address: int
    dtype: str
    shape: list


def raw(t: torch.Tensor) -> Raw:
    """The native handle of a contiguous tensor (the caller keeps ``t`` alive)."""
    if not t.is_contiguous():
        raise ValueError("internal: a non-contiguous tensor reached the native layer")
    return Raw(t.data_ptr(), str(t.dtype).removeprefix("torch."), list(t.shape))


def cuda_index(t: torch.Tensor) -> int | None:
    """``None`` for a CPU tensor, the CUDA ordinal for a CUDA tensor.

    On CUDA the runtime runs on its own stream (it cannot yet adopt torch's), so the
    current stream is waited for first; the runtime waits for its own before returning.
    """
    if t.device.type == "cpu":
        return None
    if t.device.type == "cuda":
        torch.cuda.current_stream(t.device).synchronize()
        return t.device.index if t.device.index is not None else torch.cuda.current_device()
    raise ValueError(f"tensors on {t.device} are not supported (CPU or CUDA only)")


class Backward(NamedTuple):
    """The tensors of one backward call as python/src/backward.rs reads them."""

    q: Raw
    k: Raw
    v: Raw
    h0: Optional[Raw]
    d_o: Raw
    d_ht: Optional[Raw]
    dq: Raw
    dk: Raw
    dv: Raw
    dh0: Optional[Raw]
    dlog_gamma: Raw


def maybe_raw(t: torch.Tensor | None) -> Raw | None:
    return None if t is None else raw(t)


class Decays(NamedTuple):
    """Decays and scale as python/src/problem.rs reads them (by attribute)."""

    gammas: Optional[list]
    head_offset: int
    scale: Optional[float]


def decays(gammas: torch.Tensor | None, head_offset: int, scale: float | None) -> Decays:
    """Per-head decays as the f64 list the runtime validates (``None``: the RetNet decays
    of global heads ``head_offset..``), with the scale."""
    if gammas is not None:
        gammas = gammas.detach().to(device="cpu", dtype=torch.float64).reshape(-1).tolist()
    return Decays(gammas, head_offset, scale)


def bounds(cu_seqlens: torch.Tensor | None) -> list[int] | None:
    """``cu_seqlens`` as a list of ints (validated by the runtime)."""
    if cu_seqlens is None:
        return None
    return [int(b) for b in cu_seqlens.detach().cpu().reshape(-1).tolist()]
