//! Backward ops on CPU tensors through the runtime's training API (ARCHITECTURE §7):
//! `Retention::{chunkwise,recurrent,parallel}_backward` and their varlen forms. Inputs are copied into host tensors, gradients copied into the caller's
//! outputs. The GPU backward is not built yet: the Python layer refuses CUDA tensors before
//! calling here, and the runtime would refuse them too.

use pyo3::prelude::*;
use retention_kernels::cpu::CpuElement;
use retention_runtime::{Device, Gradients, Retention};

use crate::error::{IntoPy, PyResult};
use crate::problem::{Decays, Form, dim};
use crate::raw::Raw;

/// The inputs and gradient outputs of one backward call (`retention._native_call.Backward`).
#[derive(Debug, FromPyObject)]
pub struct Io {
    q: Raw,
    k: Raw,
    v: Raw,
    h0: Option<Raw>,
    d_o: Raw,
    d_ht: Option<Raw>,
    /// dq, dk, dv: the input dtype.
    dq: Raw,
    dk: Raw,
    dv: Raw,
    /// dh0 f32 (`None` for the parallel form).
    dh0: Option<Raw>,
    /// d log γ `[H]` f32.
    dlog_gamma: Raw,
}

/// Gradients of the stateful forms (see `forward::stateful_forward`).
#[pyfunction]
pub fn stateful_backward(
    py: Python<'_>,
    io: Io,
    decays: Decays,
    chunk: Option<usize>,
    cu_seqlens: Option<Vec<i64>>,
) -> PyResult<()> {
    py.detach(|| {
        let rt = decays.retention(&Device::Cpu, dim(&io.q, "q", 2, "[B, T, H, K]")?)?;
        let cu = crate::problem::cu_seqlens(cu_seqlens.as_deref(), &io.q)?;
        let run = Stateful {
            form: Form::of(chunk),
            cu: cu.as_ref(),
        };
        crate::by_dtype!(io.q.float("q")?, stateful::<T>(&rt, &io, run))
    })
}

/// The form and boundaries of a stateful backward.
#[derive(Debug, Clone, Copy)]
struct Stateful<'a> {
    form: Form,
    cu: Option<&'a retention_core::CuSeqlens>,
}

fn stateful<T: CpuElement>(rt: &Retention, io: &Io, run: Stateful<'_>) -> PyResult<()> {
    let (q, k, v) = (
        io.q.host::<T>("q")?,
        io.k.host::<T>("k")?,
        io.v.host::<T>("v")?,
    );
    let h0 = io
        .h0
        .as_ref()
        .map(|h| h.host::<f32>("initial_state"))
        .transpose()?;
    let d_o = io.d_o.host::<T>("do")?;
    let d_ht = io.d_ht.as_ref().map(|h| h.host::<f32>("dht")).transpose()?;
    let (qkv, h0, d_ht) = ((&q, &k, &v), h0.as_ref(), d_ht.as_ref());
    let g = match (run.cu, run.form) {
        (None, Form::Chunk(c)) => rt.chunkwise_backward(qkv, c, h0, &d_o, d_ht),
        (None, Form::Recurrent) => rt.recurrent_backward(qkv, h0, &d_o, d_ht),
        (Some(cu), Form::Chunk(c)) => rt.chunkwise_varlen_backward(qkv, cu, (h0, c), &d_o, d_ht),
        (Some(cu), Form::Recurrent) => rt.recurrent_varlen_backward(qkv, cu, h0, &d_o, d_ht),
    }
    .py()?;
    write_grads(io, &g)
}

fn write_grads<T: CpuElement>(io: &Io, g: &Gradients<T>) -> PyResult<()> {
    io.dq.write("dq", &g.dq)?;
    io.dk.write("dk", &g.dk)?;
    io.dv.write("dv", &g.dv)?;
    if let (Some(out), Some(d)) = (&io.dh0, &g.dh0) {
        out.write("dh0", d)?;
    }
    io.dlog_gamma.write("dlog_gamma", &g.dlog_gamma)
}

/// Gradients of the parallel form (`h0`, `d_ht` and `dh0` are `None`).
#[pyfunction]
pub fn parallel_backward(py: Python<'_>, io: Io, decays: Decays) -> PyResult<()> {
    py.detach(|| {
        let rt = decays.retention(&Device::Cpu, dim(&io.q, "q", 2, "[B, T, H, K]")?)?;
        crate::by_dtype!(io.q.float("q")?, parallel::<T>(&rt, &io))
    })
}

fn parallel<T: CpuElement>(rt: &Retention, io: &Io) -> PyResult<()> {
    let (q, k, v) = (
        io.q.host::<T>("q")?,
        io.k.host::<T>("k")?,
        io.v.host::<T>("v")?,
    );
    let d_o = io.d_o.host::<T>("do")?;
    let g = rt.parallel_backward((&q, &k, &v), &d_o).py()?;
    write_grads(io, &g)
}
