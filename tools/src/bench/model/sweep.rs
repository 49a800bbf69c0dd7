//! The sweeps of one architecture, one point at a time under one progress bar: batch 1
//! against context, batch against context (the grid's batches up to the first that does not
//! fit, then the exact largest batch that fits, `batch_limit`), and the prefill. The model's weights are built once and dropped before the next architecture.

use indicatif::ProgressBar;

use crate::error::CliError;

use super::batch_limit;
use super::grid::ModelGrid;
use super::net::{Ledger, NetConfig, NetElement};
use super::point::{self, Model, cli_error};
use super::report::{ModelInfo, ModelRow, Sweep};

/// Rows and the model as built, for one architecture.
pub struct ArchRun {
    /// The model (geometry and parameters allocated), when its weights fitted.
    pub info: ModelInfo,
    /// Every point, in sweep order.
    pub rows: Vec<ModelRow>,
    /// Why nothing was measured (the weights did not fit), if so.
    pub skipped: Option<String>,
}

/// Run every sweep of `cfg` under a memory limit of `limit` bytes.
///
/// # Errors
/// Model errors other than running out of memory.
pub fn run<T: NetElement>(
    cfg: &NetConfig,
    grid: &ModelGrid,
    limit: u64,
    seed: u64,
    bar: &ProgressBar,
) -> Result<ArchRun, CliError> {
    let ledger = Ledger::new(limit);
    let arch = cfg.arch.name();
    bar.set_message(format!("{arch}: building {} weights", cfg.name));
    let mut model = match Model::<T>::build(cfg, &ledger, seed) {
        Ok(m) => m,
        Err(e) if e.is_out_of_memory() => {
            bar.inc(grid.points() as u64);
            return Ok(ArchRun {
                info: ModelInfo {
                    config: cfg.clone(),
                    params: cfg.params() as u64,
                },
                rows: Vec::new(),
                skipped: Some(format!("{arch}: weights do not fit: {e}")),
            });
        }
        Err(e) => return Err(cli_error(e)),
    };
    let info = ModelInfo {
        config: cfg.clone(),
        params: point::params::<T>(&ledger),
    };
    let mut rows = Vec::new();
    let mut seed_of = {
        let mut n = seed;
        move || {
            n = n.wrapping_add(0x9E37);
            n
        }
    };
    for &context in &grid.contexts {
        bar.set_message(format!("{arch}: batch 1, context {context}"));
        let p = (Sweep::Context, 1, context);
        let plan = (grid.plan, grid.context_warmup);
        rows.push(point::decode(&mut model, &ledger, plan, p, seed_of())?);
        bar.inc(1);
    }
    for &context in &grid.batch_contexts {
        let first = rows.len();
        for &batch in &grid.batches {
            if rows[first..].iter().all(|r| r.fits) {
                bar.set_message(format!("{arch}: batch {batch}, context {context}"));
                let p = (Sweep::Batch, batch, context);
                let plan = (grid.plan, grid.batch_warmup);
                rows.push(point::decode(&mut model, &ledger, plan, p, seed_of())?);
            }
            bar.inc(1);
        }
        let tried = &rows[first..];
        let fitted: Vec<(usize, u64)> = tried
            .iter()
            .filter(|r| r.fits)
            .map(|r| (r.batch, r.total_bytes.unwrap_or(0)))
            .collect();
        let Some(lo) = fitted.iter().map(|f| f.0).max() else {
            continue; // not even the smallest batch fits
        };
        let hi = tried.iter().filter(|r| !r.fits).map(|r| r.batch).min();
        let guess = batch_limit::guess(&fitted, limit);
        batch_limit::largest_fit(lo, hi, guess, grid.batch_cap, |batch| {
            bar.inc_length(1);
            bar.set_message(format!("{arch}: batch limit, {batch} at context {context}"));
            let p = (Sweep::Batch, batch, context);
            let row = point::decode(
                &mut model,
                &ledger,
                (grid.plan, grid.batch_warmup),
                p,
                seed_of(),
            )?;
            bar.inc(1);
            let fits = row.fits;
            rows.push(row);
            Ok::<bool, CliError>(fits)
        })?;
    }
    bar.set_message(format!("{arch}: prefill {} tokens", grid.prefill_tokens));
    rows.push(point::prefill(
        &mut model,
        &ledger,
        grid.prefill_tokens,
        grid.chunk,
        seed_of(),
    )?);
    bar.inc(1);
    model.stop();
    Ok(ArchRun {
        info,
        rows,
        skipped: None,
    })
}
