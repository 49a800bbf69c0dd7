"""``StatePool``: per-sequence recurrent state for serving (ARCHITECTURE §6) — a slot per
sequence holding ``[layers, H, K, V]`` float32, decode steps over any set of slots
(continuous batching), chunkwise prefill from a slot, snapshot and restore.
Slots are generation-checked: a freed or foreign slot raises ``ValueError``.

``device`` ``"cpu"`` (default) or a CUDA device: there the states live in GPU memory and
``step`` and ``prefill`` run our kernels on the tensors' own memory and
``torch.cuda.current_stream()`` (no copy; ``prefill`` waits for the stream once, before its
scratch states go back to the pool); ``snapshot``/``restore`` copy through CPU tensors (the
snapshot waits for the current stream)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _checks, _native

Slot = _native.Slot


def _on(device: torch.device, name: str, t, ndim: int, layout: str) -> Tensor:
    t = _checks.tensor(name, t, ndim, layout)
    if t.device != device:
        raise ValueError(f"`{name}` is on {t.device}; this StatePool runs on {device}")
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"`{name}` has dtype {t.dtype}; expected float32, float16 or bfloat16")
    return t.contiguous()


class StatePool:
    """``capacity`` sequences × ``layers`` layers of ``heads`` × ``dk`` × ``dv`` state."""

    def __init__(
        self,
        heads: int,
        dk: int,
        dv: int,
        layers: int = 1,
        capacity: int = 1,
        gammas: Optional[Sequence[float]] = None,
        head_offset: int = 0,
        scale: Optional[float] = None,
        device="cpu",
    ):
        for name, n in (("heads", heads), ("dk", dk), ("dv", dv), ("layers", layers),
                        ("capacity", capacity)):
            _checks.positive_int(name, n, 1)
        g = _checks.gammas(gammas, heads, torch.device("cpu"))
        g = None if g is None else g.detach().double().tolist()
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"StatePool runs on the CPU or CUDA, not {device}")
        self._pool = _native.StatePool(
            heads, dk, dv, layers, capacity, g,
            _checks.positive_int("head_offset", head_offset, 0), _checks.scale(scale),
            device.index if device.type == "cuda" else None,
        )
        self.device = device
        self.heads, self.dk, self.dv, self.layers = heads, dk, dv, layers

    @property
    def in_use(self) -> int:
        return self._pool.in_use

    @property
    def bytes_per_sequence(self) -> int:
        return self._pool.bytes_per_sequence

    def alloc(self) -> Slot:
        """A fresh zeroed slot (``ValueError`` when the pool is full)."""
        return self._pool.alloc()

    def free(self, slot: Slot) -> None:
        self._pool.free(slot)

    def reset(self, slot: Slot) -> None:
        self._pool.reset(slot)

    def snapshot(self, slot: Slot) -> Tensor:
        """A copy of the slot's state ``[layers, H, K, V]`` float32, as a CPU tensor."""
        out = torch.empty((self.layers, self.heads, self.dk, self.dv), dtype=torch.float32)
        self._pool.snapshot(slot, out)
        return out

    def restore(self, slot: Slot, state: Tensor) -> None:
        state = _checks.tensor("state", state, 4, "[layers, H, K, V]")
        state = state.to(device="cpu", dtype=torch.float32).contiguous()
        self._pool.restore(slot, state)

    def step(self, layer: int, slots: Sequence[Slot], q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """One decode step of ``layer``: q, k ``[N, H, K]``, v ``[N, H, V]`` for ``slots``
        (N of them, distinct); returns o ``[N, H, V]`` and advances each slot's state."""
        q, k, v = (_on(self.device, n, t, 3, f"[N, H, {d}]") for n, t, d in (("q", q, "K"), ("k", k, "K"), ("v", v, "V")))
        slots = list(slots)
        layer = _checks.positive_int("layer", layer, 0)
        o = q.new_empty((q.shape[0], self.heads, self.dv))
        self._pool.step(layer, slots, q, k, v, o)
        return o

    def prefill(self, layer: int, slot: Slot, q: Tensor, k: Tensor, v: Tensor,
                chunk_size: int = 64) -> Tensor:
        """Chunkwise prefill of one sequence (q, k ``[1, T, H, K]``, v ``[1, T, H, V]``) from
        the slot's state of ``layer``; the final state is written back. Returns o."""
        q, k, v = (_on(self.device, n, t, 4, f"[1, T, H, {d}]") for n, t, d in (("q", q, "K"), ("k", k, "K"), ("v", v, "V")))
        layer = _checks.positive_int("layer", layer, 0)
        o = q.new_empty(q.shape[:3] + (self.dv,))
        self._pool.prefill(layer, slot, q, k, v, o,
                           _checks.positive_int("chunk_size", chunk_size, 1))
        return o
