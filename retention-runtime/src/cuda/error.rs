//! How CUDA driver failures become [`RetentionError`]s, with what was being done and where.

use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use retention_core::RetentionError;

/// A failure of the device itself or of a call that only a broken or lost device fails
/// (context, stream, copy, event). After an asynchronous kernel fault every later call on the
/// device fails this way: CUDA errors of that kind are sticky for the context.
pub(super) fn device_error(ordinal: usize, doing: &str, err: DriverError) -> RetentionError {
    RetentionError::DeviceFailure(format!("CUDA device {ordinal}: {doing} failed: {err}"))
}

/// A failure to load a module, find an entry, or launch it.
pub(super) fn kernel_error(ordinal: usize, doing: &str, err: DriverError) -> RetentionError {
    RetentionError::KernelLoad(format!("CUDA device {ordinal}: {doing} failed: {err}"))
}

/// An allocation failure: out of memory is [`RetentionError::OutOfMemory`] with the bytes
/// free at the time (`available`), anything else a device error.
pub(super) fn alloc_error(
    ordinal: usize,
    requested: usize,
    available: usize,
    err: DriverError,
) -> RetentionError {
    if err.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        RetentionError::OutOfMemory {
            requested,
            available,
        }
    } else {
        device_error(ordinal, &format!("allocating {requested} bytes"), err)
    }
}

/// A buffer, stream or kernel used with an object of another device.
pub(super) fn foreign_object(what: &str, ordinal: usize, other: usize) -> RetentionError {
    RetentionError::Unsupported {
        what: format!("{what} from CUDA device {other}"),
        value: format!("used on CUDA device {ordinal}"),
        reason: "device objects stay on the device that made them".into(),
    }
}
