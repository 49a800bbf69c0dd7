//! Timing the chunk-size candidates of the CPU chunkwise kernel on one shape.

use std::time::Duration;

use retention_core::Gammas;
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

use crate::byte_size::saturating_product;
use crate::error::CliError;
use crate::progress;
use crate::random_tensor::random;
use crate::timing::RepeatPlan;

pub use super::cache::CHUNK_CANDIDATES;
use super::cache::{CandidateTiming, ShapeBucket};

/// Repetitions per candidate.
pub fn plan(quick: bool) -> RepeatPlan {
    if quick {
        RepeatPlan {
            min_runs: 3,
            max_runs: 10,
            budget: Duration::from_millis(10),
        }
    } else {
        RepeatPlan {
            min_runs: 5,
            max_runs: 50,
            budget: Duration::from_millis(500),
        }
    }
}

/// The most memory a tuning problem may take.
pub const MEMORY_LIMIT: u64 = 4 << 30;

/// Bytes the bucket's problem allocates: q, k, v, o in `elem`-byte elements and the f32 state.
pub fn problem_bytes(bucket: &ShapeBucket, elem: usize) -> u64 {
    let b = bucket;
    let tokens = saturating_product(&[b.batch, b.seq_len, b.heads, elem, 2]);
    tokens
        .saturating_mul(b.dk.saturating_add(b.dv) as u64)
        .saturating_add(saturating_product(&[b.batch, b.heads, b.dk, b.dv, 4]))
}

/// Time chunkwise prefill on the bucket's shape once per candidate (one progress step each).
///
/// # Errors
/// Kernel errors (none expected for a valid shape).
pub fn time_candidates<T: CpuElement>(
    bucket: &ShapeBucket,
    plan: RepeatPlan,
) -> Result<Vec<CandidateTiming>, CliError> {
    let b = bucket;
    let params = RetentionParams::new(Gammas::retnet(b.heads)?, None);
    let q = random::<T>(&[b.batch, b.seq_len, b.heads, b.dk], 11)?;
    let k = random::<T>(&[b.batch, b.seq_len, b.heads, b.dk], 12)?;
    let v = random::<T>(&[b.batch, b.seq_len, b.heads, b.dv], 13)?;
    let bar = progress::bar(CHUNK_CANDIDATES.len(), "autotune");
    let mut out = Vec::with_capacity(CHUNK_CANDIDATES.len());
    for chunk in CHUNK_CANDIDATES {
        bar.set_message(format!("chunk {chunk}"));
        let t = plan.measure(1, || {
            std::hint::black_box(cpu::chunkwise(&q, &k, &v, &params, chunk, None)?);
            Ok::<(), CliError>(())
        })?;
        out.push(CandidateTiming {
            chunk,
            seconds: t.median,
            runs: t.runs,
            kernel: None,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}
