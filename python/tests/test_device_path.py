"""The CUDA code path without a GPU: ``retention.testing.emulated_device()`` routes CPU
tensors through the emulated GPU (our PTX kernels on the PTX emulator; its memory is host
memory, so tensors are borrowed by address as CUDA tensors are). Under it the backward
(autograd, every dense form, the decays' gradient), ``rms_norm_swish_gate`` and its backward,
and ``StatePool.step`` take the device API's code path, and must meet the same float64
references with the same tolerances as on the CPU. The varlen backward has no device form
and raises ``NotImplementedError`` there."""

import pytest
import torch

import retention
from reference import assert_close, inputs, retnet_gammas, retention as ref
from retention.testing import emulated_device
from test_backward import _check_grads


@pytest.mark.parametrize("form", ["chunk", "recurrent", "parallel"])
def test_device_gradients_meet_the_reference(form):
    with emulated_device():
        _check_grads(form, 1, 20, 2, 16, 8, chunk=8, seed=3)


def test_device_gradients_without_initial_state():
    with emulated_device():
        _check_grads("chunk", 1, 13, 2, 16, 8, chunk=4, with_h0=False, seed=4)


def test_device_and_cpu_gradients_agree_in_bf16():
    q, k, v = inputs(1, 12, 2, 16, 8, dtype=torch.bfloat16, seed=5)
    d_o = torch.randn(1, 12, 2, 8).to(torch.bfloat16)

    def grads():
        leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
        o, _ = retention.chunk_retention(*leaves, chunk_size=8)
        (o.float() * d_o.float()).sum().backward()
        return [t.grad.float() for t in leaves]

    cpu = grads()
    with emulated_device():
        dev = grads()
    for name, a, b in zip(("dq", "dk", "dv"), dev, cpu):
        assert_close(a, b.double(), torch.bfloat16, f"bf16 {name}")


def test_device_epilogue_forward_and_backward():
    x, g = torch.randn(2, 3, 2, 40), torch.randn(2, 3, 2, 40)
    dy = torch.randn(2, 3, 2, 40)

    def run():
        xl, gl = x.clone().requires_grad_(True), g.clone().requires_grad_(True)
        y = retention.rms_norm_swish_gate(xl, gl, eps=1e-6)
        (y * dy).sum().backward()
        return y.detach(), xl.grad, gl.grad

    xd, gd = x.double().requires_grad_(True), g.double().requires_grad_(True)
    r = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6)
    yref = r * gd * torch.sigmoid(gd)
    (yref * dy.double()).sum().backward()
    with emulated_device():
        y, dx, dg = run()
    assert_close(y, yref.detach(), torch.float32, "y")
    assert_close(dx, xd.grad, torch.float32, "dx")
    assert_close(dg, gd.grad, torch.float32, "dg")


def test_device_pool_steps_equal_one_pass():
    h, dk, dv, t = 2, 16, 8, 6
    q, k, v = inputs(1, t, h, dk, dv, seed=6)
    with emulated_device():
        pool = retention.StatePool(heads=h, dk=dk, dv=dv, layers=1, capacity=2)
        a = pool.alloc()
        outs = [pool.step(0, [a], q[:, s], k[:, s], v[:, s]) for s in range(t)]
        snap = pool.snapshot(a)
    got = torch.stack(outs, dim=1)
    want_o, want_ht = ref(q, k, v, retnet_gammas(h))
    assert_close(got, want_o, torch.float32, "decode o")
    assert_close(snap[0], want_ht[0], torch.float32, "pool state")


def test_device_varlen_backward_is_not_implemented():
    q, k, v = (t.requires_grad_(True) for t in inputs(1, 9, 2, 16, 8))
    cu = torch.tensor([0, 4, 9])
    with emulated_device():
        o, _ = retention.chunk_retention(q, k, v, cu_seqlens=cu, chunk_size=4)
        with pytest.raises(NotImplementedError, match="varlen backward"):
            o.sum().backward()


def test_pool_device_and_tensor_placement_are_checked():
    with pytest.raises(ValueError, match="CPU or CUDA"):
        retention.StatePool(heads=2, dk=8, dv=8, device="meta")
    pool = retention.StatePool(heads=2, dk=8, dv=8)
    assert pool.device == torch.device("cpu")
    slot = pool.alloc()
    q = torch.randn(1, 2, 8, device="meta")
    with pytest.raises(ValueError, match="meta"):
        pool.step(0, [slot], q, q, q)


def test_device_pool_prefill_snapshot_restore():
    h, dk, dv = 2, 16, 8
    q, k, v = inputs(1, 10, h, dk, dv, seed=7)
    with emulated_device():
        pool = retention.StatePool(heads=h, dk=dk, dv=dv, layers=2, capacity=2)
        a, b = pool.alloc(), pool.alloc()
        o = pool.prefill(1, a, q, k, v, chunk_size=4)
        snap = pool.snapshot(a)
        pool.restore(b, snap)
        again = pool.snapshot(b)
    want_o, want_ht = ref(q, k, v, retnet_gammas(h))
    assert_close(o, want_o, torch.float32, "prefill o")
    assert snap[0].abs().sum() == 0
    assert_close(snap[1], want_ht[0], torch.float32, "prefilled state")
    assert torch.equal(again, snap)
