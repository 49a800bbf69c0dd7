//! The paper's Figure-1 ratios from the measured rows: memory (batch 1), throughput (each
//! model at its best batch) and latency (batch 1), Transformer against RetNet at one context,
//! where each model ran out of memory in the batch sweep, and the time to first token.

use super::grid::ModelGrid;
use super::net::Arch;
use super::report::{MaxBatch, ModelRow, Summary, Sweep};

/// The row of `arch` in `sweep` at `batch` and `context`, if it was measured.
fn at(
    rows: &[ModelRow],
    arch: Arch,
    sweep: Sweep,
    batch: usize,
    context: usize,
) -> Option<&ModelRow> {
    rows.iter().find(|r| {
        r.arch == arch && r.sweep == sweep && r.batch == batch && r.context == context && r.fits
    })
}

/// The measured batch-sweep row of `arch` at `context` with the most tokens/s.
fn best(rows: &[ModelRow], arch: Arch, context: usize) -> Option<&ModelRow> {
    rows.iter()
        .filter(|r| r.arch == arch && r.sweep == Sweep::Batch && r.context == context)
        .filter(|r| r.tokens_per_s.is_some())
        .max_by(|a, b| {
            a.tokens_per_s
                .partial_cmp(&b.tokens_per_s)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

/// The summary of `model` at `context` (which the grid's sweeps must include to be non-null).
pub fn summarise(model: &str, context: usize, grid: &ModelGrid, rows: &[ModelRow]) -> Summary {
    let one = |arch| {
        at(rows, arch, Sweep::Context, 1, context)
            .or_else(|| at(rows, arch, Sweep::Batch, 1, context))
    };
    let (r1, t1) = (one(Arch::Retnet), one(Arch::Transformer));
    let (rb, tb) = (
        best(rows, Arch::Retnet, context),
        best(rows, Arch::Transformer, context),
    );
    let max_batch = grid
        .batch_contexts
        .iter()
        .map(|&c| {
            let batch_rows = |arch| {
                rows.iter()
                    .filter(move |r| r.arch == arch && r.sweep == Sweep::Batch && r.context == c)
            };
            let largest = |arch| batch_rows(arch).filter(|r| r.fits).map(|r| r.batch).max();
            // Exact when the batch right above the largest that fitted was run and failed.
            let ran_out = |arch| {
                let next = largest(arch).map_or(1, |b| b + 1);
                batch_rows(arch).any(|r| !r.fits && r.batch == next)
            };
            MaxBatch {
                context: c,
                retnet: largest(Arch::Retnet),
                transformer: largest(Arch::Transformer),
                retnet_ran_out: ran_out(Arch::Retnet),
                transformer_ran_out: ran_out(Arch::Transformer),
            }
        })
        .collect();
    let ttft = |arch| {
        rows.iter()
            .find(|r| r.arch == arch && r.sweep == Sweep::Prefill && r.fits)
            .and_then(|r| r.latency_ms)
    };
    let (retnet_ttft_ms, transformer_ttft_ms) = (ttft(Arch::Retnet), ttft(Arch::Transformer));
    Summary {
        model: model.to_string(),
        context,
        memory_ratio: ratio(
            t1.and_then(|r| r.total_bytes).map(|b| b as f64),
            r1.and_then(|r| r.total_bytes).map(|b| b as f64),
        ),
        throughput_ratio: ratio(
            rb.and_then(|r| r.tokens_per_s),
            tb.and_then(|r| r.tokens_per_s),
        ),
        latency_ratio: ratio(t1.and_then(|r| r.latency_ms), r1.and_then(|r| r.latency_ms)),
        retnet_best_batch: rb.map(|r| r.batch),
        transformer_best_batch: tb.map(|r| r.batch),
        max_batch,
        prefill_tokens: grid.prefill_tokens,
        retnet_ttft_ms,
        transformer_ttft_ms,
        ttft_ratio: ratio(transformer_ttft_ms, retnet_ttft_ms),
    }
}
