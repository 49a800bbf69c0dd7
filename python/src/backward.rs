//! Backward ops (ARCHITECTURE §7). On CUDA tensors (and on CPU tensors under the emulator
//! test route) the dense forms run the runtime's device API —
//! `Retention::{chunkwise,parallel}_backward_into` on the tensors' own memory, on torch's
//! current stream, no copy (the recurrent form's gradients are the chunkwise form's); the
//! varlen backward has no device form yet and raises `NotImplementedError` there. On CPU
//! tensors `Retention::{chunkwise,recurrent,parallel}_backward` and their varlen forms run
//! on host copies, the gradients copied into the caller's outputs.

use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use retention_kernels::cpu::CpuElement;
use retention_runtime::{Device, Gradients, GradientsInto, Retention, Stream};

use crate::error::{IntoPy, PyResult};
use crate::problem::{Decays, Form, dim};
use crate::raw::{Raw, device_of, torch_stream};

/// The chunk the recurrent form's device backward runs at (its gradients are the chunkwise
/// form's for every chunk).
const RECURRENT_CHUNK: usize = 64;

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
    /// dh0 f32 (`None`: not wanted; always for the parallel form).
    dh0: Option<Raw>,
    /// d log γ `[H]` f32 (`None`: not wanted).
    dlog_gamma: Option<Raw>,
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
    let device = device_of(&io.q)?;
    if device != Device::Cpu {
        if cu_seqlens.is_some() {
            return Err(PyNotImplementedError::new_err(format!(
                "the varlen backward on {device} is not built yet; train varlen batches on CPU \
                 tensors"
            )));
        }
        let stream = torch_stream(py, &device)?;
        let chunk = Some(chunk.unwrap_or(RECURRENT_CHUNK));
        return py.detach(|| on_device(&io, &decays, &device, chunk, stream.as_ref()));
    }
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
    match &io.dlog_gamma {
        Some(out) => out.write("dlog_gamma", &g.dlog_gamma),
        None => Ok(()),
    }
}

/// A dense backward on `device` through the device API: chunkwise at `chunk`, or the
/// parallel form (`None`), on the tensors' memory and `stream`.
fn on_device(
    io: &Io,
    decays: &Decays,
    device: &Device,
    chunk: Option<usize>,
    stream: Option<&Stream>,
) -> PyResult<()> {
    let rt = decays.retention(device, dim(&io.q, "q", 2, "[B, T, H, K]")?)?;
    let state = |t: &Option<Raw>, name| t.as_ref().map(|t| t.state_view(name, device)).transpose();
    let (q, k, v) = (
        io.q.view("q", device)?,
        io.k.view("k", device)?,
        io.v.view("v", device)?,
    );
    let (d_o, h0, d_ht) = (
        io.d_o.view("do", device)?,
        state(&io.h0, "initial_state")?,
        state(&io.d_ht, "dht")?,
    );
    let (mut dq, mut dk, mut dv) = (
        io.dq.view("dq", device)?,
        io.dk.view("dk", device)?,
        io.dv.view("dv", device)?,
    );
    let (mut dh0, mut dlog_gamma) = (state(&io.dh0, "dh0")?, state(&io.dlog_gamma, "dlog_gamma")?);
    let out = GradientsInto {
        dq: &mut dq,
        dk: &mut dk,
        dv: &mut dv,
        dh0: dh0.as_mut(),
        dlog_gamma: dlog_gamma.as_mut(),
    };
    let qkv = (&q, &k, &v);
    match chunk {
        Some(c) => {
            rt.chunkwise_backward_into(qkv, h0.as_ref(), (&d_o, d_ht.as_ref()), out, (c, stream))
        }
        None => rt.parallel_backward_into(qkv, &d_o, out, stream),
    }
    .py()
}

/// Gradients of the parallel form (`h0`, `d_ht` and `dh0` are `None`).
#[pyfunction]
pub fn parallel_backward(py: Python<'_>, io: Io, decays: Decays) -> PyResult<()> {
    let device = device_of(&io.q)?;
    if device != Device::Cpu {
        let stream = torch_stream(py, &device)?;
        return py.detach(|| on_device(&io, &decays, &device, None, stream.as_ref()));
    }
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
