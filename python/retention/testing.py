"""TEST PATH ONLY: run ops on CPU tensors through the *emulated GPU* instead of the CPU kernels.

CI has no GPU. The emulated device (our PTX emulator) keeps its memory on the host, so with
this switch on, CPU tensors are borrowed by address exactly as CUDA tensors are and every op
takes the device code path — the runtime's device API, our PTX kernels (executed by the
emulator), the backward's device dispatch, the pool's ``stage`` + ``step_into`` — without a
GPU. It is slow (an instruction-level emulator) and process-wide; use it only in tests::

    with retention.testing.emulated_device():
        o, _ = chunk_retention(q, k, v)   # q, k, v CPU tensors, run as on a GPU
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from . import _native


@contextlib.contextmanager
def emulated_device() -> Iterator[None]:
    """Within the block, ops on CPU tensors (and ``StatePool``s created there) run on the
    emulated GPU; the CPU kernels come back on exit."""
    _native._route_cpu_through_emulator(True)
    try:
        yield
    finally:
        _native._route_cpu_through_emulator(False)
