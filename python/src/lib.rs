//! `retention._native`: the native half of the `retention` Python package (ARCHITECTURE §2,
//! bindings): thin pyo3 functions over the public API of `retention-runtime`. The Python half
//! (`python/retention/`) owns the torch side — argument checks with fla's signatures,
//! output allocation, `torch.library` registration, autograd — and hands tensors over as
//! `(data_ptr, dtype, shape)` of contiguous tensors it keeps alive (see `raw`).
//!
//! What it must not know: how a kernel is written or chosen (the runtime decides), and torch
//! itself (no torch C++ API here: only addresses, dtype names and shapes cross).
//!
//! Every runtime error becomes a Python exception (`error`); nothing here panics on input,
//! and pyo3 turns any panic that did happen into a Python exception rather than an abort.

// pyo3 hands #[pyfunction] arguments over as owned values extracted from Python objects;
// borrowing them instead is not an option it offers for `Vec`/`Option`/struct arguments.
#![allow(clippy::needless_pass_by_value)]

/// Runs `$f::<T>(args)` for the element type `T` of a `retention_core::Dtype`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident :: < T > ( $($arg:expr),* )) => {
        match $dtype {
            ::retention_core::Dtype::F32 => $f::<f32>($($arg),*),
            ::retention_core::Dtype::F16 => $f::<::half::f16>($($arg),*),
            ::retention_core::Dtype::Bf16 => $f::<::half::bf16>($($arg),*),
        }
    };
}
pub(crate) use by_dtype;

mod backward;
mod epilogue;
mod error;
mod forward;
mod pool;
mod problem;
mod raw;

use pyo3::prelude::*;

/// The module `retention._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(forward::stateful_forward, m)?)?;
    m.add_function(wrap_pyfunction!(forward::parallel_forward, m)?)?;
    m.add_function(wrap_pyfunction!(backward::stateful_backward, m)?)?;
    m.add_function(wrap_pyfunction!(backward::parallel_backward, m)?)?;
    m.add_function(wrap_pyfunction!(epilogue::rms_norm_swish_gate, m)?)?;
    m.add_function(wrap_pyfunction!(epilogue::rms_norm_swish_gate_backward, m)?)?;
    m.add_function(wrap_pyfunction!(raw::_route_cpu_through_emulator, m)?)?;
    m.add_class::<pool::PyStatePool>()?;
    m.add_class::<pool::PySlot>()?;
    Ok(())
}
