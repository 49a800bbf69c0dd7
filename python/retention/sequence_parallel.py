"""Sequence parallelism over ``torch.distributed``: T split across ranks, the state handed on.

Every rank holds a contiguous slice of the tokens of every sequence (rank 0 the first).
Retention carries one K×V state per (sequence, head) from token to token, so the ranks form
a pipeline over states and nothing else crosses them — never q, k, v or o:

* forward: rank r receives its initial state h0 from rank r − 1 (rank 0 takes the caller's
  ``initial_state``, or none), runs :func:`retention.chunk_retention` on its tokens with
  ``output_final_state=True`` and sends the final state to rank r + 1;
* backward: rank r receives dht = dL/d(final state) from rank r + 1 (the last rank takes the
  caller's ``dht``, or zeros), runs the backward of its call, and sends dh0 = dL/dh0 to
  rank r − 1.

The outputs and gradients equal one process's over the whole sequence (the split changes
only where f32 rounding happens). Each message is B·H·K·V f32 values: 256 KiB per sequence
for 16 heads of K = V = 64.

**NCCL across GPUs.** The same code runs unchanged with ``backend="nccl"``: put q, k, v on
``cuda:<local_rank>``; the states are then device tensors, ``send``/``recv`` move them
GPU-to-GPU, and our kernels run on the current stream. **Heads** shard independently of
tokens: a rank holding global heads ``h0 .. h0 + H_local`` passes ``head_offset=h0`` so it
gets those heads' RetNet decays (γ_h = 1 − 2^(−5−h)); head shards need no communication at
all inside retention. Learned decays (``gammas`` with ``requires_grad``) get one share of
d log γ per rank: all-reduce ``gammas.grad`` across the sequence ranks, as DDP does for
weights.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from . import chunk_retention

__all__ = ["SequenceShard"]


class SequenceShard:
    """One rank's slice of a sequence-parallel retention call (forward, then backward).

    ``group`` is the process group of the sequence ranks (the default group if ``None``);
    ranks are ordered by their rank in it: group rank 0 holds the first tokens.
    """

    def __init__(self, group: Optional[dist.ProcessGroup] = None):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self._saved = None

    def _peer(self, group_rank: int) -> int:
        if self.group is None:
            return group_rank
        return dist.get_global_rank(self.group, group_rank)

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        initial_state: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs this rank's tokens; returns ``(o, final_state)`` of its slice.

        ``q, k, v`` are ``[B, T_rank, H, ·]``; ``initial_state`` (``[B, H, K, V]`` f32) is
        read on rank 0 only. Other keyword arguments (``scale``, ``gammas``,
        ``head_offset``, ``chunk_size``) go to :func:`retention.chunk_retention` and must be
        the same on every rank. The last rank's final state is the whole sequence's.
        """
        b, _, h, dk = q.shape
        dv = v.shape[-1]
        if self.rank == 0:
            h0 = initial_state
        else:
            h0 = torch.empty((b, h, dk, dv), dtype=torch.float32, device=q.device)
            dist.recv(h0, src=self._peer(self.rank - 1), group=self.group)
        if h0 is not None:
            h0 = h0.detach().requires_grad_(True)
        o, ht = chunk_retention(
            q, k, v, initial_state=h0, output_final_state=True, **kwargs
        )
        if self.rank + 1 < self.world:
            dist.send(ht.detach().contiguous(), dst=self._peer(self.rank + 1), group=self.group)
        self._saved = (o, ht, h0)
        return o, ht

    def backward(
        self, do: torch.Tensor, dht: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """Back-propagates ``do`` (dL/do of this rank's slice) through the pipeline.

        Accumulates ``.grad`` of this rank's q, k, v (and ``gammas``) as autograd does.
        ``dht`` (dL/d final state) is read on the last rank only. Returns dL/d
        ``initial_state`` on rank 0 (``None`` without an initial state, and on other ranks).
        """
        if self._saved is None:
            raise RuntimeError("SequenceShard.backward called before forward")
        o, ht, h0 = self._saved
        self._saved = None
        if self.rank + 1 < self.world:
            dht = torch.empty_like(ht)
            dist.recv(dht, src=self._peer(self.rank + 1), group=self.group)
        elif dht is None:
            dht = torch.zeros_like(ht)
        torch.autograd.backward([o, ht], [do, dht])
        if self.rank > 0:
            dh0 = h0.grad if h0.grad is not None else torch.zeros_like(h0)
            dist.send(dh0.contiguous(), dst=self._peer(self.rank - 1), group=self.group)
            return None
        return None if h0 is None else h0.grad
