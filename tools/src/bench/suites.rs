//! Running the chosen suites over the grid, one progress bar per suite.

use retention_kernels::cpu::CpuElement;

use crate::error::CliError;
use crate::progress;

use super::gpu_points::{self, GpuContext};
use super::grid::Grid;
use super::points::{self, Outcome, PointContext};
use super::report::{BenchResult, Suite};

/// Which suites to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// Decode latency against context and batch.
    pub decode: bool,
    /// Prefill throughput against T and chunk.
    pub prefill: bool,
    /// Retention against the attention KV-cache baseline.
    pub compare: bool,
}

/// Measurements and notes (skipped points) of one run.
#[derive(Debug, Default)]
pub struct Collected {
    /// Measured points in suite order.
    pub results: Vec<BenchResult>,
    /// Skipped points, with the reason.
    pub notes: Vec<String>,
}

impl Collected {
    fn push(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Measured(r) => self.results.push(r),
            Outcome::Skipped(why) => self.notes.push(why),
        }
    }
}

/// Run the selected suites with inputs of type `T`.
///
/// # Errors
/// The first kernel or pool error.
pub fn run<T: CpuElement>(
    cx: &PointContext<'_>,
    grid: &Grid,
    selection: Selection,
) -> Result<Collected, CliError> {
    let mut out = Collected::default();
    let mut seed = 1u64;
    let mut next_seed = || {
        seed += 16;
        seed
    };
    if selection.decode {
        let bar = progress::bar(
            grid.decode_batches.len() * grid.decode_contexts.len(),
            "decode",
        );
        for &batch in &grid.decode_batches {
            for &context in &grid.decode_contexts {
                bar.set_message(format!("batch {batch} context {context}"));
                out.push(points::retention_decode::<T>(
                    cx,
                    Suite::Decode,
                    batch,
                    context,
                    next_seed(),
                )?);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }
    if selection.prefill {
        let parallel = grid
            .prefill_lengths
            .iter()
            .filter(|&&t| t <= grid.parallel_max_len)
            .count();
        let bar = progress::bar(
            grid.prefill_lengths.len() * grid.prefill_chunks.len() + parallel,
            "prefill",
        );
        for &tokens in &grid.prefill_lengths {
            for &chunk in &grid.prefill_chunks {
                bar.set_message(format!("T {tokens} chunk {chunk}"));
                out.push(points::prefill::<T>(cx, tokens, Some(chunk), next_seed())?);
                bar.inc(1);
            }
            if tokens <= grid.parallel_max_len {
                bar.set_message(format!("T {tokens} parallel"));
                out.push(points::prefill::<T>(cx, tokens, None, next_seed())?);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }
    if selection.compare {
        let bar = progress::bar(2 * grid.compare_contexts.len(), "compare");
        for &context in &grid.compare_contexts {
            bar.set_message(format!("context {context} retention"));
            out.push(points::retention_decode::<T>(
                cx,
                Suite::Compare,
                1,
                context,
                next_seed(),
            )?);
            bar.inc(1);
            bar.set_message(format!("context {context} attention"));
            out.push(points::attention_decode::<T>(
                cx,
                Suite::Compare,
                1,
                context,
                next_seed(),
            )?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(out)
}

/// Run the selected suites on a GPU-like device (catalog kernels timed by the runtime).
///
/// # Errors
/// The first kernel, pool or device error.
pub fn run_gpu(
    g: &GpuContext<'_>,
    grid: &Grid,
    selection: Selection,
) -> Result<Collected, CliError> {
    let mut out = Collected::default();
    if selection.decode {
        let bar = progress::bar(
            grid.decode_batches.len() * grid.decode_contexts.len(),
            "decode",
        );
        for &batch in &grid.decode_batches {
            for &context in &grid.decode_contexts {
                bar.set_message(format!("batch {batch} context {context}"));
                out.push(gpu_points::retention_decode(
                    g,
                    Suite::Decode,
                    batch,
                    context,
                )?);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }
    if selection.prefill {
        let parallel = grid
            .prefill_lengths
            .iter()
            .filter(|&&t| t <= grid.parallel_max_len)
            .count();
        let bar = progress::bar(
            grid.prefill_lengths.len() * grid.prefill_chunks.len() + parallel,
            "prefill",
        );
        for &tokens in &grid.prefill_lengths {
            for &chunk in &grid.prefill_chunks {
                bar.set_message(format!("T {tokens} chunk {chunk}"));
                out.push(gpu_points::prefill(g, tokens, chunk)?);
                bar.inc(1);
            }
            if tokens <= grid.parallel_max_len {
                bar.set_message(format!("T {tokens} parallel"));
                out.push(gpu_points::prefill_parallel(g, tokens)?);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
    }
    if selection.compare {
        let bar = progress::bar(2 * grid.compare_contexts.len(), "compare");
        for &context in &grid.compare_contexts {
            bar.set_message(format!("context {context} retention"));
            out.push(gpu_points::retention_decode(g, Suite::Compare, 1, context)?);
            bar.inc(1);
            bar.set_message(format!("context {context} attention"));
            out.push(gpu_points::attention_decode(g, Suite::Compare, 1, context)?);
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    Ok(out)
}
