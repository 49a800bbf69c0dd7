//! The runtime's typed errors as Python exceptions (ARCHITECTURE §6): what the caller got
//! wrong is a `ValueError` (or `TypeError` for a dtype), what the machine could not do is a
//! `RuntimeError` (`MemoryError` when out of memory). The message is the runtime's own, which
//! names the tensor, the axis and the numbers.

use pyo3::PyErr;
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyTypeError, PyValueError};
use retention_core::RetentionError;

/// The Python exception for a runtime error.
pub fn to_py(e: RetentionError) -> PyErr {
    let msg = e.to_string();
    match e {
        RetentionError::DtypeMismatch { .. } => PyTypeError::new_err(msg),
        RetentionError::OutOfMemory { .. } => PyMemoryError::new_err(msg),
        RetentionError::NoDevice(_)
        | RetentionError::DeviceFailure(_)
        | RetentionError::KernelLoad(_)
        | RetentionError::Io(_) => PyRuntimeError::new_err(msg),
        // Shapes, gammas, scale, chunk, cu_seqlens, slots, devices of the tensors, and
        // head geometries no kernel serves: all say what in the call to change.
        _ => PyValueError::new_err(msg),
    }
}

/// `Result` with the error already a Python exception.
pub type PyResult<T> = Result<T, PyErr>;

/// Converts a runtime result.
pub trait IntoPy<T> {
    /// The value, or the runtime error as a Python exception.
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for retention_core::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
