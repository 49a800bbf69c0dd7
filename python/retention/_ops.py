"""The ``torch.library`` ops (namespace ``retention``): forward and backward of the stateful
forms (chunkwise, recurrent, varlen), the parallel form and the gated epilogue, each with a
fake (meta) kernel so ``torch.compile`` traces through it, and autograd registered over our
backward kernels (ARCHITECTURE §7). Inputs here are already checked by ``retention.ops``.

Devices: every op runs on CPU tensors (our CPU kernels) and on CUDA tensors (our PTX kernels
on the tensors' own memory and ``torch.cuda.current_stream()``, no copy), except the varlen
backward, which raises ``NotImplementedError`` on CUDA (no GPU kernel yet).

``chunk`` 0 selects the recurrent form. ``gammas`` ``None`` means the RetNet decays of global
heads ``head_offset..head_offset+H``; a ``[H]`` tensor of γ gets the gradient
dL/dγ = (dL/d log γ) / γ.
"""


from typing import Optional

import torch
from torch import Tensor

from . import _native
from ._native_call import Backward, bounds, decays


def _dlog_gamma_out(q: Tensor, gammas: Optional[Tensor]) -> Tensor:
    """d log γ's output. With the fixed RetNet decays (``gammas`` None) nobody reads it, so it
    is not computed (zeros keep the op pure) — on CUDA that also spares the backward its one
    wait for the stream (d log γ's partials are summed on the host)."""
    new = q.new_zeros if gammas is None else q.new_empty
    return new((q.shape[2],), dtype=torch.float32)


def _rows(q: Tensor, cu_seqlens: Optional[Tensor]) -> int:
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


# ---- stateful forms -------------------------------------------------------------------


@torch.library.custom_op("retention::stateful_fwd", mutates_args=())
def stateful_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    h0: Optional[Tensor],
    gammas: Optional[Tensor],
    head_offset: int,
    scale: Optional[float],
    chunk: int,
    cu_seqlens: Optional[Tensor],
) -> tuple[Tensor, Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    h0 = None if h0 is None else h0.contiguous()
    b, t, h, dk = q.shape
    o = q.new_empty((b, t, h, v.shape[-1]))
    ht = q.new_empty((_rows(q, cu_seqlens), h, dk, v.shape[-1]), dtype=torch.float32)
    _native.stateful_forward(
        q, k, v, h0, o, ht, decays(gammas, head_offset, scale),
        chunk if chunk > 0 else None, bounds(cu_seqlens),
    )
    return o, ht


@stateful_fwd.register_fake
def _(q, k, v, h0, gammas, head_offset, scale, chunk, cu_seqlens):
    b, t, h, dk = q.shape
    dv = v.shape[-1]
    ht = q.new_empty((_rows(q, cu_seqlens), h, dk, dv), dtype=torch.float32)
    return q.new_empty((b, t, h, dv)), ht


@torch.library.custom_op("retention::stateful_bwd", mutates_args=())
def stateful_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    h0: Optional[Tensor],
    d_o: Tensor,
    d_ht: Optional[Tensor],
    gammas: Optional[Tensor],
    head_offset: int,
    scale: Optional[float],
    chunk: int,
    cu_seqlens: Optional[Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    q, k, v, d_o = q.contiguous(), k.contiguous(), v.contiguous(), d_o.contiguous()
    h0 = None if h0 is None else h0.contiguous()
    d_ht = None if d_ht is None else d_ht.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    n, h = _rows(q, cu_seqlens), q.shape[2]
    # Without an initial state nobody reads dh0: it is not computed (zeros keep the op pure).
    new = q.new_zeros if h0 is None else q.new_empty
    dh0 = new((n, h, q.shape[-1], v.shape[-1]), dtype=torch.float32)
    dlog_gamma = _dlog_gamma_out(q, gammas)
    io = Backward(q, k, v, h0, d_o, d_ht, dq, dk, dv, None if h0 is None else dh0,
                  None if gammas is None else dlog_gamma)
    _native.stateful_backward(io, decays(gammas, head_offset, scale),
                              chunk if chunk > 0 else None, bounds(cu_seqlens))
    return dq, dk, dv, dh0, dlog_gamma


@stateful_bwd.register_fake
def _(q, k, v, h0, d_o, d_ht, gammas, head_offset, scale, chunk, cu_seqlens):
    n, h = _rows(q, cu_seqlens), q.shape[2]
    dh0 = q.new_empty((n, h, q.shape[-1], v.shape[-1]), dtype=torch.float32)
    dlog_gamma = q.new_empty((h,), dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dh0, dlog_gamma


def _stateful_setup(ctx, inputs, output):
    q, k, v, h0, gammas, head_offset, scale, chunk, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, h0, gammas, cu_seqlens)
    ctx.head_offset, ctx.scale, ctx.chunk = head_offset, scale, chunk


def _gamma_grad(gammas: Optional[Tensor], dlog_gamma: Tensor, wanted: bool):
    if gammas is None or not wanted:
        return None
    return (dlog_gamma.to(gammas.dtype) / gammas).to(gammas.device)


def _stateful_backward(ctx, d_o, d_ht):
    q, k, v, h0, gammas, cu_seqlens = ctx.saved_tensors
    if d_o is None:
        d_o = q.new_zeros(q.shape[:3] + v.shape[-1:])
    dq, dk, dv, dh0, dlog_gamma = stateful_bwd(
        q, k, v, h0, d_o, d_ht, gammas, ctx.head_offset, ctx.scale, ctx.chunk, cu_seqlens
    )
    dh0 = None if h0 is None else dh0.to(h0.dtype)
    dgamma = _gamma_grad(gammas, dlog_gamma, ctx.needs_input_grad[4])
    return dq, dk, dv, dh0, dgamma, None, None, None, None


stateful_fwd.register_autograd(_stateful_backward, setup_context=_stateful_setup)


# ---- parallel form --------------------------------------------------------------------


@torch.library.custom_op("retention::parallel_fwd", mutates_args=())
def parallel_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: Optional[Tensor],
    head_offset: int,
    scale: Optional[float],
) -> Tensor:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = q.new_empty(q.shape[:3] + v.shape[-1:])
    _native.parallel_forward(q, k, v, o, decays(gammas, head_offset, scale))
    return o


@parallel_fwd.register_fake
def _(q, k, v, gammas, head_offset, scale):
    return q.new_empty(q.shape[:3] + v.shape[-1:])


@torch.library.custom_op("retention::parallel_bwd", mutates_args=())
def parallel_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    d_o: Tensor,
    gammas: Optional[Tensor],
    head_offset: int,
    scale: Optional[float],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k, v, d_o = q.contiguous(), k.contiguous(), v.contiguous(), d_o.contiguous()
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dlog_gamma = _dlog_gamma_out(q, gammas)
    io = Backward(q, k, v, None, d_o, None, dq, dk, dv, None,
                  None if gammas is None else dlog_gamma)
    _native.parallel_backward(io, decays(gammas, head_offset, scale))
    return dq, dk, dv, dlog_gamma


@parallel_bwd.register_fake
def _(q, k, v, d_o, gammas, head_offset, scale):
    dlog_gamma = q.new_empty((q.shape[2],), dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), dlog_gamma


def _parallel_setup(ctx, inputs, output):
    q, k, v, gammas, head_offset, scale = inputs
    ctx.save_for_backward(q, k, v, gammas)
    ctx.head_offset, ctx.scale = head_offset, scale


def _parallel_backward(ctx, d_o):
    q, k, v, gammas = ctx.saved_tensors
    dq, dk, dv, dlog_gamma = parallel_bwd(q, k, v, d_o, gammas, ctx.head_offset, ctx.scale)
    return dq, dk, dv, _gamma_grad(gammas, dlog_gamma, ctx.needs_input_grad[3]), None, None


parallel_fwd.register_autograd(_parallel_backward, setup_context=_parallel_setup)


# ---- gated epilogue -------------------------------------------------------------------


@torch.library.custom_op("retention::rms_norm_swish_gate", mutates_args=())
def norm_gate_fwd(x: Tensor, g: Tensor, eps: float) -> Tensor:
    x, g = x.contiguous(), g.contiguous()
    y = torch.empty_like(x)
    _native.rms_norm_swish_gate(x, g, eps, y)
    return y


@norm_gate_fwd.register_fake
def _(x, g, eps):
    return torch.empty_like(x)


@torch.library.custom_op("retention::rms_norm_swish_gate_bwd", mutates_args=())
def norm_gate_bwd(x: Tensor, g: Tensor, eps: float, dy: Tensor) -> tuple[Tensor, Tensor]:
    x, g, dy = x.contiguous(), g.contiguous(), dy.contiguous()
    dx, dg = torch.empty_like(x), torch.empty_like(g)
    _native.rms_norm_swish_gate_backward(x, g, eps, dy, dx, dg)
    return dx, dg


@norm_gate_bwd.register_fake
def _(x, g, eps, dy):
    return torch.empty_like(x), torch.empty_like(g)


def _norm_gate_setup(ctx, inputs, output):
    x, g, eps = inputs
    ctx.save_for_backward(x, g)
    ctx.eps = eps


def _norm_gate_backward(ctx, dy):
    x, g = ctx.saved_tensors
    dx, dg = norm_gate_bwd(x, g, ctx.eps, dy)
    return dx, dg, None


norm_gate_fwd.register_autograd(_norm_gate_backward, setup_context=_norm_gate_setup)
