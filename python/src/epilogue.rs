//! The gated epilogue `y = RMSNorm_head(x) ⊙ swish(g)` (ARCHITECTURE §1, the
//! MultiScaleRetention output before W_O) and its backward, on every device through the
//! runtime's device API (`Retention::msr_epilogue_into`, `msr_epilogue_backward_into`): the
//! tensors' own memory, torch's current stream on CUDA, no copy there (on the CPU the
//! forward runs in place, the backward on host copies).

use pyo3::prelude::*;
use retention_runtime::{Device, Retention};

use crate::error::{IntoPy, PyResult};
use crate::problem::{Decays, dim};
use crate::raw::{Raw, device_of, torch_stream};

/// The gated epilogue `y = RMSNorm_head(x) ⊙ swish(g)` (eps ≥ 0).
#[pyfunction]
pub fn rms_norm_swish_gate(py: Python<'_>, x: Raw, g: Raw, eps: f64, y: Raw) -> PyResult<()> {
    let device = device_of(&x)?;
    let stream = torch_stream(py, &device)?;
    py.detach(|| {
        let rt = epilogue_retention(&x, &device)?;
        let (tx, tg) = (x.view("x", &device)?, g.view("g", &device)?);
        let mut ty = y.view("y", &device)?;
        rt.msr_epilogue_into(&tx, &tg, eps, &mut ty, stream.as_ref())
            .py()
    })
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
    let device = device_of(&x)?;
    let stream = torch_stream(py, &device)?;
    py.detach(|| {
        let rt = epilogue_retention(&x, &device)?;
        let (tx, tg, tdy) = (
            x.view("x", &device)?,
            g.view("g", &device)?,
            dy.view("dy", &device)?,
        );
        let (mut tdx, mut tdg) = (dx.view("dx", &device)?, dg.view("dg", &device)?);
        let out = (&mut tdx, &mut tdg);
        rt.msr_epilogue_backward_into(&tx, &tg, eps, &tdy, out, stream.as_ref())
            .py()
    })
}

/// The epilogue needs no decays, but it is a method of a [`Retention`] on `device`: the
/// RetNet decays of x's heads serve.
fn epilogue_retention(x: &Raw, device: &Device) -> PyResult<std::sync::Arc<Retention>> {
    let heads = dim(x, "x", 2, "[B, T, H, V]")?;
    Decays {
        gammas: None,
        head_offset: 0,
        scale: None,
    }
    .retention(device, heads)
}
