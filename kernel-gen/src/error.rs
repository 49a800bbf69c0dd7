//! The generator's own error type: a spec no generator serves, a DSL misuse, or a tool failure.

use retention_core::RetentionError;
use thiserror::Error;

/// Everything that can stop a kernel from being generated or checked.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GenError {
    /// The spec asks for something no generator serves (e.g. head dim K = 96).
    #[error("unsupported {what}: {value} ({reason})")]
    UnsupportedSpec {
        /// The field or feature (e.g. `head dim K`).
        what: &'static str,
        /// The requested value.
        value: String,
        /// Which values are supported.
        reason: String,
    },
    /// An instruction family the DSL has reserved but does not emit yet (tensor-core ops).
    #[error("unsupported instruction {op}: {reason}")]
    UnsupportedOp {
        /// The PTX instruction family (e.g. `mma.sync.m16n8k16`).
        op: &'static str,
        /// Why it is not available.
        reason: &'static str,
    },
    /// A DSL call whose operands do not type-check (a generator bug, caught before emission).
    #[error("kernel `{kernel}`: {message}")]
    Dsl {
        /// The kernel being built.
        kernel: String,
        /// What was wrong.
        message: String,
    },
    /// A launch that the kernel cannot serve (e.g. heads not matching a named gamma set).
    #[error("invalid launch: {0}")]
    Launch(String),
    /// `ptxas` failed to run or rejected the PTX.
    #[error("ptxas: {0}")]
    Ptxas(String),
    /// A file could not be written or read.
    #[error("io: {0}")]
    Io(String),
}

impl From<GenError> for RetentionError {
    fn from(e: GenError) -> Self {
        match e {
            GenError::UnsupportedSpec {
                what,
                value,
                reason,
            } => RetentionError::Unsupported {
                what: what.to_string(),
                value,
                reason,
            },
            GenError::UnsupportedOp { op, reason } => RetentionError::Unsupported {
                what: "instruction".into(),
                value: op.into(),
                reason: reason.into(),
            },
            GenError::Io(m) => RetentionError::Io(m),
            other => RetentionError::KernelLoad(other.to_string()),
        }
    }
}

/// The typed error a generator gives for a spec field it cannot serve.
pub(crate) fn unsupported(
    what: &'static str,
    value: impl std::fmt::Display,
    reason: impl Into<String>,
) -> GenError {
    GenError::UnsupportedSpec {
        what,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// `Ok` when `1 <= value <= max`; otherwise [`GenError::UnsupportedSpec`] naming `what`,
/// `value` and `reason` (the range check every family's `validate` makes on head dims).
pub(crate) fn check_span(
    what: &'static str,
    value: u32,
    max: u32,
    reason: impl Into<String>,
) -> Result<(), GenError> {
    if (1..=max).contains(&value) {
        Ok(())
    } else {
        Err(unsupported(what, value, reason))
    }
}

/// The result of a kernel-gen call that can fail with a [`GenError`].
pub type GenResult<T> = Result<T, GenError>;
