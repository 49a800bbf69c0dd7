//! Forward ops on borrowed tensors through the runtime's device API (`*_into`): the CPU's
//! fast kernels on host memory, or the PTX kernels on CUDA memory, writing the caller's
//! outputs in place (ARCHITECTURE §1, §2).
//!
//! Streams: the runtime cannot yet wrap a foreign `CUstream`, so on CUDA the Python layer
//! waits for torch's current stream before the call and this layer waits for the runtime's
//! stream after it; the tensors are never copied.

use pyo3::prelude::*;
use retention_runtime::{Device, Stream};

use crate::error::{IntoPy, PyResult};
use crate::problem::{Decays, Form, cu_seqlens, dim};
use crate::raw::{Raw, device_of};

/// Waits for the runtime's work on a CUDA device (nothing to wait for on the CPU).
fn finish(device: &Device) -> PyResult<()> {
    if matches!(device, Device::Cuda(_)) {
        Stream::default_for(device).py()?.synchronize().py()?;
    }
    Ok(())
}

/// The stateful forms: o and H_T from q, k, v and an optional H0, dense `[B, T, H, ·]` or
/// packed varlen (`cu_seqlens`). `chunk` `None` runs the recurrent form.
#[pyfunction]
#[pyo3(signature = (q, k, v, h0, o, ht, decays, chunk, cu_seqlens))]
pub fn stateful_forward(
    py: Python<'_>,
    q: Raw,
    k: Raw,
    v: Raw,
    h0: Option<Raw>,
    o: Raw,
    ht: Raw,
    decays: Decays,
    chunk: Option<usize>,
    cu_seqlens: Option<Vec<i64>>,
) -> PyResult<()> {
    py.detach(|| {
        let device = device_of(&q)?;
        let rt = decays.retention(&device, dim(&q, "q", 2, "[B, T, H, K]")?)?;
        let cu = self::cu_seqlens(cu_seqlens.as_deref(), &q)?;
        let (tq, tk, tv) = (
            q.view("q", &device)?,
            k.view("k", &device)?,
            v.view("v", &device)?,
        );
        let th0 = h0
            .map(|h| h.state_view("initial_state", &device))
            .transpose()?;
        let (mut to, mut tht) = (
            o.view("o", &device)?,
            ht.state_view("final_state", &device)?,
        );
        let qkv = (&tq, &tk, &tv);
        let out = (&mut to, &mut tht);
        let h0 = th0.as_ref();
        match (cu, Form::of(chunk)) {
            (None, Form::Chunk(c)) => rt.chunkwise_into(qkv, h0, out, c, None),
            (None, Form::Recurrent) => rt.recurrent_into(qkv, h0, out, None),
            (Some(cu), Form::Chunk(c)) => rt.chunkwise_varlen_into(qkv, &cu, h0, out, c, None),
            (Some(cu), Form::Recurrent) => rt.recurrent_varlen_into(qkv, &cu, h0, out, None),
        }
        .py()?;
        finish(&device)
    })
}

/// The parallel form: o from q, k, v `[B, T, H, ·]` (no state).
#[pyfunction]
#[pyo3(signature = (q, k, v, o, decays))]
pub fn parallel_forward(
    py: Python<'_>,
    q: Raw,
    k: Raw,
    v: Raw,
    o: Raw,
    decays: Decays,
) -> PyResult<()> {
    py.detach(|| {
        let device = device_of(&q)?;
        let rt = decays.retention(&device, dim(&q, "q", 2, "[B, T, H, K]")?)?;
        let (tq, tk, tv) = (
            q.view("q", &device)?,
            k.view("k", &device)?,
            v.view("v", &device)?,
        );
        let mut to = o.view("o", &device)?;
        rt.parallel_into((&tq, &tk, &tv), &mut to, None).py()?;
        finish(&device)
    })
}
