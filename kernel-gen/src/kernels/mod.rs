//! Retention kernel generators, one file per kernel, each validating its spec first.

pub mod attention_combine;
pub mod attention_decode;
mod attention_layout;
mod attention_merge;
mod attention_plan;
mod attention_spec;
pub mod chunk_states;
pub mod chunk_states_tc;
pub mod chunkwise;
pub mod chunkwise_fma;
pub mod chunkwise_fma_blocked;
pub mod chunkwise_tc;
pub mod chunkwise_tc_streamed;
pub mod chunkwise_two_phase;
pub mod decay;
pub mod decode;
mod decode_phases;
pub mod parallel;
pub mod parallel_fma;
pub mod parallel_tc;

use crate::GenError;
use crate::spec::{GammaSet, KernelSpec};

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

/// The checks every `(rows, heads)` launch grid shares: both at least 1, a named gamma set's
/// own head count, and the CUDA grid limits (x ≤ 2³¹ − 1, y ≤ 65535).
pub(crate) fn check_grid(spec: &KernelSpec, rows: u32, heads: u32) -> Result<(), GenError> {
    if rows == 0 || heads == 0 {
        return Err(GenError::Launch(format!(
            "rows {rows} and heads {heads} must be at least 1"
        )));
    }
    if let GammaSet::Retnet { heads: fixed } = spec.gammas
        && fixed != heads
    {
        return Err(GenError::Launch(format!(
            "{} serves exactly {fixed} heads, got {heads}",
            spec.gammas.name()
        )));
    }
    if heads > 65535 || rows > i32::MAX as u32 {
        return Err(GenError::Launch(format!(
            "grid ({rows}, {heads}) exceeds the CUDA grid limits"
        )));
    }
    Ok(())
}
