//! What a model step can fail with: the kernels' and runtime's own errors, or a buffer that
//! does not fit the memory limit (how the batch sweep finds each model's largest batch).

use retention_core::RetentionError;
use thiserror::Error;

/// A failure building or stepping a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A kernel or the state pool refused (shapes, slots, γ); also the state pool's own
    /// out-of-memory.
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// A buffer would take the model past its memory limit.
    #[error("out of memory: {what} needs {requested} bytes with {in_use} in use (limit {limit})")]
    OutOfMemory {
        /// The buffer asked for.
        what: String,
        /// Its bytes.
        requested: u64,
        /// Bytes in use before it.
        in_use: u64,
        /// The limit.
        limit: u64,
    },
    /// The configuration cannot be built (names the field and the values).
    #[error("model configuration: {0}")]
    Config(String),
}

impl ModelError {
    /// True when the failure is only that the model did not fit its memory limit.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(
            self,
            ModelError::OutOfMemory { .. }
                | ModelError::Retention(RetentionError::OutOfMemory { .. })
        )
    }
}
