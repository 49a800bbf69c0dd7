"""``retention``: RetNet retention for PyTorch over the ``retention`` Rust library.

Drop-in for ``fla.ops.retention``::

    from retention import chunk_retention, fused_recurrent_retention, parallel_retention

CPU tensors (float32, float16, bfloat16) run the library's CPU kernels, forward and backward;
CUDA tensors run its PTX kernels (forward) on the tensors' own memory. Every op is a
``torch.library`` op with a fake kernel, so ``torch.compile`` traces through it.
"""

from .ops import (
    chunk_retention,
    fused_recurrent_retention,
    parallel_retention,
    rms_norm_swish_gate,
)
from .pool import Slot, StatePool

__all__ = [
    "chunk_retention",
    "fused_recurrent_retention",
    "parallel_retention",
    "rms_norm_swish_gate",
    "StatePool",
    "Slot",
]
