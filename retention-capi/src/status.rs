//! Status codes, the thread-local error message and the panic guard every entry runs in
//! (ARCHITECTURE §6: errors are values; §8: no panic crosses the C boundary).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Status code of every exported function.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionStatus {
    /// Success.
    Ok = 0,
    /// A required pointer was null.
    NullPointer = 1,
    /// The dtype is not supported by this entry point, or tensors disagree on it.
    BadDtype = 2,
    /// Shapes disagree, or a dimension is zero, or the rank is wrong.
    BadShape = 3,
    /// Strides are not the contiguous row-major strides of the shape (the only layout served).
    NonContiguous = 4,
    /// The handle is null, foreign or already destroyed.
    InvalidHandle = 5,
    /// The device does not exist, or a tensor or stream belongs to another device.
    UnsupportedDevice = 6,
    /// The library reported an error (message in `retention_last_error`).
    Library = 7,
    /// A panic was caught inside the library.
    Panic = 8,
    /// An argument value is invalid (a zero chunk, bad `cu_seqlens`, a stale slot).
    InvalidArgument = 9,
    /// The operation exists but not on this device or in this form yet (the message says
    /// which and what to do instead).
    Unsupported = 10,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// An error on the way out: its code and message.
#[derive(Debug)]
pub(crate) struct Failure(pub RetentionStatus, pub String);

impl Failure {
    pub(crate) fn new(code: RetentionStatus, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
}

impl From<retention::RetentionError> for Failure {
    /// The status code of a library error, by its kind, and its message.
    fn from(e: retention::RetentionError) -> Self {
        use retention::RetentionError as E;
        let status = match e {
            E::ShapeMismatch { .. } | E::DataLength { .. } | E::ZeroDim { .. } => {
                RetentionStatus::BadShape
            }
            E::DtypeMismatch { .. } => RetentionStatus::BadDtype,
            E::InvalidGamma { .. }
            | E::GammaCount { .. }
            | E::InvalidScale(_)
            | E::ZeroChunk
            | E::InvalidCuSeqlens(_)
            | E::Slot(_) => RetentionStatus::InvalidArgument,
            E::Unsupported { .. } => RetentionStatus::Unsupported,
            E::NoDevice(_) | E::WrongDevice { .. } => RetentionStatus::UnsupportedDevice,
            _ => RetentionStatus::Library,
        };
        Failure(status, e.to_string())
    }
}

fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Run `f`, catch panics, record the message, return the code.
pub(crate) fn guard(f: impl FnOnce() -> Result<(), Failure>) -> RetentionStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            set_error("");
            RetentionStatus::Ok
        }
        Ok(Err(Failure(code, msg))) => {
            set_error(&msg);
            code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_error(&format!("panic inside retention: {what}"));
            RetentionStatus::Panic
        }
    }
}

/// `Err(NullPointer)` naming `name` when `p` is null.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<(), Failure> {
    if p.is_null() {
        return Err(Failure::new(
            RetentionStatus::NullPointer,
            format!("{name} is null"),
        ));
    }
    Ok(())
}

/// The message of the last failed call on this thread ("" after a success).
///
/// The pointer stays valid until the next call into this library on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn retention_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
