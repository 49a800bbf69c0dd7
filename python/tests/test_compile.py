"""``torch.compile`` traces through our ops (fake kernels + registered autograd, PITFALLS
#13): a tiny retention layer compiled with ``fullgraph=True`` gives the eager result,
forward and gradients."""

import torch

import retention


class TinyRetentionLayer(torch.nn.Module):
    def __init__(self, d=32, heads=2, head_dim=16):
        super().__init__()
        self.h, self.e = heads, head_dim
        self.qkvg = torch.nn.Linear(d, 4 * heads * head_dim, bias=False)
        self.out = torch.nn.Linear(heads * head_dim, d, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v, g = self.qkvg(x).view(b, t, 4, self.h, self.e).unbind(2)
        o, _ = retention.chunk_retention(q, k, v, chunk_size=16)
        y = retention.rms_norm_swish_gate(o, g.contiguous())
        return self.out(y.reshape(b, t, -1))


def _loss_and_grads(model, x):
    model.zero_grad()
    y = model(x)
    y.square().sum().backward()
    return y.detach(), [p.grad.clone() for p in model.parameters()]


def test_compiled_equals_eager():
    torch.manual_seed(0)
    model = TinyRetentionLayer()
    x = torch.randn(2, 40, 32)
    y_eager, g_eager = _loss_and_grads(model, x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    y_comp, g_comp = _loss_and_grads(compiled, x)
    torch.testing.assert_close(y_comp, y_eager, rtol=0, atol=0)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inductor_equals_eager():
    """The default backend (inductor, C++ codegen around our opaque ops): ~80 s to compile on
    2 cores. Inductor may fuse the projections differently from eager, so this compares with
    torch's default float32 tolerances; our op itself runs the same kernel in both."""
    torch.manual_seed(1)
    model = TinyRetentionLayer()
    x = torch.randn(2, 40, 32)
    y_eager, g_eager = _loss_and_grads(model, x)
    y_comp, g_comp = _loss_and_grads(torch.compile(model, fullgraph=True), x)
    torch.testing.assert_close(y_comp, y_eager)
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b)


def test_opcheck():
    """torch.library.opcheck: schema, fake kernel and autograd registration agree."""
    from retention import _ops
    q, k, v = (torch.randn(1, 12, 2, 8) for _ in range(3))
    h0 = torch.randn(1, 2, 8, 8)
    torch.library.opcheck(_ops.stateful_fwd, (q, k, v, h0, None, 0, None, 4, None))
    torch.library.opcheck(_ops.parallel_fwd, (q, k, v, None, 0, 0.5))
    torch.library.opcheck(_ops.norm_gate_fwd, (q, k, 1e-6))
