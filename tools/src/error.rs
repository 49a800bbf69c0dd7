//! What can go wrong in the tool, and which exit code each failure gets.

use std::path::{Path, PathBuf};

use retention_core::RetentionError;
use thiserror::Error;

/// A failure of a subcommand. Every variant renders as one line.
#[derive(Debug, Error)]
pub enum CliError {
    /// The problem itself is invalid (shapes, γ, scale, chunk, cu_seqlens).
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// The input file could not be read at all.
    #[error("cannot read input `{}`: {reason}", path.display())]
    ReadInput {
        /// The file given with `--input`.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// The input file was read but its contents are not what `run` needs.
    #[error("input `{}`: {reason}", path.display())]
    BadInput {
        /// The file given with `--input`.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        reason: String,
    },
    /// A flag's value is invalid in a way the argument parser cannot see.
    #[error("{0}")]
    BadFlag(String),
    /// The output could not be written.
    #[error("cannot write output `{}`: {reason}", path.display())]
    WriteOutput {
        /// The file given with `--output`.
        path: PathBuf,
        /// The operating system's (or serializer's) reason.
        reason: String,
    },
    /// `run --demo` found forms that disagree beyond the tolerance.
    #[error("demo self-check failed: {0}")]
    DemoMismatch(String),
    /// The request is valid but this build cannot do it yet (e.g. benchmarking the emulator).
    #[error("{what} is not supported yet{hint}")]
    NotSupported {
        /// What was asked for.
        what: String,
        /// Where to go instead (starts with a separator, or empty).
        hint: String,
    },
    /// The autotune cache directory or file could not be written.
    #[error("cannot write autotune cache `{}`: {reason}", path.display())]
    WriteCache {
        /// The cache file or directory.
        path: PathBuf,
        /// The operating system's (or serializer's) reason.
        reason: String,
    },
    /// `verify` found kernels that fail (ptxas errors, spills, emulator errors or results
    /// off the reference).
    #[error("verify failed: {0}")]
    VerifyFailed(String),
}

impl CliError {
    /// Exit code: 1 when a self-check (`run --demo`, `verify`) found a wrong result, 2 for
    /// anything the user gave us.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::DemoMismatch(_) | CliError::VerifyFailed(_) => 1,
            _ => 2,
        }
    }

    /// A [`CliError::BadInput`] for `path`.
    pub fn bad_input(path: &Path, reason: impl Into<String>) -> Self {
        CliError::BadInput {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// A [`CliError::WriteOutput`] for `path`.
    pub fn write_output(path: &Path, reason: &dyn std::fmt::Display) -> Self {
        CliError::WriteOutput {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}
