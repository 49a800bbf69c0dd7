"""Argument checks of the public ops: a wrong type is a ``TypeError``, a wrong value or shape
a ``ValueError``, each naming the argument and the numbers (ARCHITECTURE §6). They read only
dtypes, devices and shapes, so they run unchanged on the fake tensors of ``torch.compile``.
The runtime checks everything again and its errors become the same exceptions."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._native_call import FLOAT_DTYPES


def tensor(name: str, t, ndim: int, layout: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"`{name}` must be {layout}, got shape {list(t.shape)}")
    return t


def qkv(q, k, v) -> tuple[int, int, int, int, int]:
    """Checks q, k ``[B, T, H, K]`` and v ``[B, T, H, V]``; returns (B, T, H, K, V)."""
    q = tensor("q", q, 4, "[B, T, H, K]")
    k = tensor("k", k, 4, "[B, T, H, K]")
    v = tensor("v", v, 4, "[B, T, H, V]")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"`q` has dtype {q.dtype}; retention takes float32, float16 or bfloat16")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"`{name}` has dtype {t.dtype} but `q` has {q.dtype}")
        if t.device != q.device:
            raise ValueError(f"`{name}` is on {t.device} but `q` is on {q.device}")
    if q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"tensors on {q.device} are not supported (CPU or CUDA only)")
    b, t, h, dk = q.shape
    if list(k.shape) != [b, t, h, dk]:
        raise ValueError(
            f"`k` must be [B={b}, T={t}, H={h}, K={dk}] like `q`, got {list(k.shape)}"
        )
    if list(v.shape[:3]) != [b, t, h]:
        raise ValueError(f"`v` must be [B={b}, T={t}, H={h}, V], got {list(v.shape)}")
    return b, t, h, dk, v.shape[-1]


def scale(s) -> Optional[float]:
    if s is None:
        return None
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        raise TypeError(f"`scale` must be a float or None, got {type(s).__name__}")
    return float(s)


def positive_int(name: str, n, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"`{name}` must be an int, got {type(n).__name__}")
    if n < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {n}")
    return n


def gammas(g, heads: int, device: torch.device) -> Optional[Tensor]:
    """``None`` or a ``[H]`` float tensor of decays (a list or tuple is converted)."""
    if g is None:
        return None
    if isinstance(g, (list, tuple)):
        g = torch.tensor(g, dtype=torch.float64)
    if not isinstance(g, Tensor):
        raise TypeError(f"`gammas` must be a tensor or a list of floats, got {type(g).__name__}")
    if not g.is_floating_point():
        raise TypeError(f"`gammas` must be floating point, got {g.dtype}")
    if list(g.shape) != [heads]:
        raise ValueError(f"`gammas` must be [H={heads}], got {list(g.shape)}")
    return g


def cu_seqlens(cu, batch: int) -> Optional[Tensor]:
    if cu is None:
        return None
    if not isinstance(cu, Tensor):
        raise TypeError(f"`cu_seqlens` must be a torch.Tensor, got {type(cu).__name__}")
    if cu.dtype not in (torch.int32, torch.int64) or cu.dim() != 1:
        raise TypeError(f"`cu_seqlens` must be a 1-D int32/int64 tensor, got {cu.dtype} {list(cu.shape)}")
    if batch != 1:
        raise ValueError(
            f"with `cu_seqlens` the batch must be packed as [1, ΣT, H, ·], got B={batch}"
        )
    if cu.shape[0] < 2:
        raise ValueError(f"`cu_seqlens` needs N+1 ≥ 2 entries, got {cu.shape[0]}")
    return cu


def initial_state(h0, rows: int, h: int, dk: int, dv: int, device) -> Optional[Tensor]:
    """``None`` or the state ``[N, H, K, V]`` as float32 (the state is f32 everywhere)."""
    if h0 is None:
        return None
    h0 = tensor("initial_state", h0, 4, "[N, H, K, V]")
    if list(h0.shape) != [rows, h, dk, dv]:
        raise ValueError(
            f"`initial_state` must be [N={rows}, H={h}, K={dk}, V={dv}], got {list(h0.shape)}"
        )
    if not h0.is_floating_point():
        raise TypeError(f"`initial_state` must be floating point, got {h0.dtype}")
    if h0.device != device:
        raise ValueError(f"`initial_state` is on {h0.device} but `q` is on {device}")
    return h0.float()
