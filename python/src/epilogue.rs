//! The gated epilogue `y = RMSNorm_head(x) ⊙ swish(g)` (ARCHITECTURE §1, the
//! MultiScaleRetention output before W_O) and its backward, on CPU tensors through
//! `Retention::msr_epilogue` and `Retention::msr_epilogue_backward`.

use pyo3::prelude::*;
use retention_core::HostTensor;
use retention_kernels::cpu::CpuElement;
use retention_runtime::{Device, Retention};

use crate::error::{IntoPy, PyResult};
use crate::problem::{Decays, dim};
use crate::raw::Raw;

/// The gated epilogue `y = RMSNorm_head(x) ⊙ swish(g)` (eps ≥ 0) on CPU tensors.
#[pyfunction]
pub fn rms_norm_swish_gate(py: Python<'_>, x: Raw, g: Raw, eps: f64, y: Raw) -> PyResult<()> {
    py.detach(|| {
        let rt = epilogue_retention(&x)?;
        crate::by_dtype!(x.float("x")?, epilogue::<T>(&rt, (&x, &g), eps, &y))
    })
}

fn epilogue<T: CpuElement>(
    rt: &Retention,
    (x, g): (&Raw, &Raw),
    eps: f64,
    y: &Raw,
) -> PyResult<()> {
    let out = rt
        .msr_epilogue(&x.host::<T>("x")?, &g.host::<T>("g")?, eps)
        .py()?;
    y.write("y", &out)
}

/// Gradients of [`rms_norm_swish_gate`]: dx and dg for the upstream `dy`.
#[pyfunction]
pub fn rms_norm_swish_gate_backward(
    py: Python<'_>,
    x: Raw,
    g: Raw,
    eps: f64,
    dy: Raw,
    dx: Raw,
    dg: Raw,
) -> PyResult<()> {
    py.detach(|| {
        let rt = epilogue_retention(&x)?;
        let io = [&x, &g, &dy, &dx, &dg];
        crate::by_dtype!(x.float("x")?, epilogue_backward::<T>(&rt, io, eps))
    })
}

fn epilogue_backward<T: CpuElement>(rt: &Retention, io: [&Raw; 5], eps: f64) -> PyResult<()> {
    let [x, g, dy, dx, dg] = io;
    let (x, g, dy): (HostTensor<T>, HostTensor<T>, HostTensor<T>) =
        (x.host("x")?, g.host("g")?, dy.host("dy")?);
    let grads = rt.msr_epilogue_backward(&x, &g, eps, &dy).py()?;
    dx.write("dx", &grads.d_o)?;
    dg.write("dg", &grads.dg)
}

/// The epilogue needs no decays, but it is a method of a CPU [`Retention`]: the RetNet
/// decays of x's heads serve.
fn epilogue_retention(x: &Raw) -> PyResult<std::sync::Arc<Retention>> {
    let heads = dim(x, "x", 2, "[B, T, H, V]")?;
    Decays {
        gammas: None,
        head_offset: 0,
        scale: None,
    }
    .retention(&Device::Cpu, heads)
}
