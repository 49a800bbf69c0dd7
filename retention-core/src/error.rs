//! The single error type of the public API (ARCHITECTURE §6): every bad input is one of these.

use thiserror::Error;

/// Result alias used across the workspace.
pub type Result<T, E = RetentionError> = std::result::Result<T, E>;

/// Everything that can go wrong when asking for retention. Never a panic on user input.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetentionError {
    /// A tensor's rank or one of its named axes disagrees with the problem.
    #[error("shape mismatch for `{tensor}`: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which tensor (e.g. `q`, `h0`).
        tensor: String,
        /// The expected shape, axes named (e.g. `[B=2, T=5, H=4, K=8]`).
        expected: String,
        /// The shape actually given.
        got: String,
    },
    /// A tensor's data length does not match the product of its shape.
    #[error("tensor `{tensor}` has {len} elements but its shape {shape:?} needs {needed}")]
    DataLength {
        /// Which tensor.
        tensor: String,
        /// Elements present.
        len: usize,
        /// Declared shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        needed: usize,
    },
    /// A problem dimension is zero where it must be positive.
    #[error("dimension {axis} must be at least 1, got 0")]
    ZeroDim {
        /// The axis name (B, T, H, K, V).
        axis: &'static str,
    },
    /// A decay is not a finite number strictly between 0 and 1.
    #[error("gamma for head {head} is {value}, which is not finite and strictly inside (0, 1)")]
    InvalidGamma {
        /// Global head index.
        head: usize,
        /// The offending value.
        value: f64,
    },
    /// The number of gammas does not match the number of heads.
    #[error("{got} gammas given for {heads} heads")]
    GammaCount {
        /// Heads in the problem.
        heads: usize,
        /// Gammas provided.
        got: usize,
    },
    /// The scale applied to q is not finite.
    #[error("scale {0} is not a finite number")]
    InvalidScale(f64),
    /// A chunk size of zero was requested.
    #[error("chunk size must be at least 1")]
    ZeroChunk,
    /// `cu_seqlens` is malformed.
    #[error("invalid cu_seqlens: {0}")]
    InvalidCuSeqlens(String),
    /// A head dimension (or other dimension) that no kernel variant serves.
    #[error("unsupported {what}: {value} ({reason})")]
    Unsupported {
        /// The dimension or feature (e.g. `head dim K`).
        what: String,
        /// The requested value.
        value: String,
        /// Which values are supported.
        reason: String,
    },
    /// A device ran out of memory; the allocator remains usable.
    #[error("out of device memory: requested {requested} bytes, {available} available")]
    OutOfMemory {
        /// Bytes requested.
        requested: usize,
        /// Bytes available at the time.
        available: usize,
    },
    /// The requested device does not exist (e.g. no GPU, or no CUDA driver).
    #[error("no such device: {0}")]
    NoDevice(String),
    /// A device call failed after the device was opened (stream, copy, event, or a sticky
    /// fault left by an earlier kernel).
    #[error("device failure: {0}")]
    DeviceFailure(String),
    /// A kernel module failed to generate, assemble or load.
    #[error("kernel load failed: {0}")]
    KernelLoad(String),
    /// A state slot handle is freed, stale or belongs to another pool, or the pool is full.
    #[error("state slot error: {0}")]
    Slot(String),
    /// A device tensor passed to an op lives on another device than the op runs on.
    #[error("device mismatch for `{tensor}`: expected a tensor on {expected}, got one on {got}")]
    WrongDevice {
        /// Which tensor.
        tensor: String,
        /// The device the op runs on.
        expected: String,
        /// The tensor's device.
        got: String,
    },
    /// A device tensor's element type is not the one the op needs.
    #[error("dtype mismatch for `{tensor}`: expected {expected}, got {got}")]
    DtypeMismatch {
        /// Which tensor.
        tensor: String,
        /// The element type the op needs.
        expected: String,
        /// The tensor's element type.
        got: String,
    },
    /// A file could not be read or written, or is not in the expected format.
    #[error("{0}")]
    Io(String),
}
