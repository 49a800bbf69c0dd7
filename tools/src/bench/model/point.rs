//! One measured point: start a batch at a context, time decode steps of the whole model,
//! read the ledger's high-water marks. A point that does not fit the memory limit is a row
//! with `fits: false`, not an error.

use retention_core::Element;

use crate::error::CliError;
use crate::timing::RepeatPlan;

use super::net::{
    Arch, Kind, Ledger, ModelError, NetConfig, NetElement, RetNet, Transformer, fill,
};
use super::report::{ModelRow, Sweep};

/// Either architecture, started and stepped the same way.
pub enum Model<T: NetElement> {
    /// RetNet.
    Retnet(Box<RetNet<T>>),
    /// The Transformer.
    Transformer(Transformer<T>),
}

impl<T: NetElement> Model<T> {
    /// Build `cfg`'s architecture with seeded weights counted in `ledger`.
    ///
    /// # Errors
    /// Out of memory (the weights do not fit); kernel parameter errors.
    pub fn build(cfg: &NetConfig, ledger: &Ledger, seed: u64) -> Result<Self, ModelError> {
        Ok(match cfg.arch {
            Arch::Retnet => Model::Retnet(Box::new(RetNet::new(cfg, ledger, seed)?)),
            Arch::Transformer => Model::Transformer(Transformer::new(cfg, ledger, seed)?),
        })
    }

    /// Serve `batch` sequences at `context` tokens.
    fn start(&mut self, batch: usize, context: usize, seed: u64) -> Result<(), ModelError> {
        match self {
            Model::Retnet(m) => m.start(batch),
            Model::Transformer(m) => m.start(batch, context, seed),
        }
    }

    /// Release the batch's state or caches.
    pub fn stop(&mut self) {
        match self {
            Model::Retnet(m) => m.stop(),
            Model::Transformer(m) => m.stop(),
        }
    }

    fn step(&mut self, x: &mut [T]) -> Result<(), ModelError> {
        match self {
            Model::Retnet(m) => m.step(x),
            Model::Transformer(m) => m.step(x),
        }
    }

    fn config(&self) -> &NetConfig {
        match self {
            Model::Retnet(m) => m.config(),
            Model::Transformer(m) => m.config(),
        }
    }
}

/// The error a sweep stops on (anything but not fitting).
pub fn cli_error(e: ModelError) -> CliError {
    match e {
        ModelError::Retention(r) => CliError::Retention(r),
        other => CliError::BadFlag(other.to_string()),
    }
}

/// A row saying the point did not fit, with the allocator's reason.
fn does_not_fit(mut row: ModelRow, e: &ModelError) -> ModelRow {
    row.fits = false;
    row.note = Some(e.to_string());
    row
}

/// Time decode steps of `batch` sequences at `context` tokens.
///
/// # Errors
/// Any model error other than running out of memory.
pub fn decode<T: NetElement>(
    model: &mut Model<T>,
    ledger: &Ledger,
    (plan, warmup): (RepeatPlan, usize),
    (sweep, batch, context): (Sweep, usize, usize),
    seed: u64,
) -> Result<ModelRow, CliError> {
    let arch = model.config().arch;
    let d = model.config().d_model;
    let row = ModelRow::empty(sweep, arch, batch, context, 1);
    model.stop();
    ledger.reset_peaks();
    let outcome = (|| {
        model.start(batch, context, seed)?;
        let mut x0 = vec![T::default(); batch * d];
        fill::uniform(&mut x0, seed ^ 0x5EED, 1.0);
        let mut x = ledger.tensor::<T>(Kind::Activations, "residual stream", &[batch, d])?;
        plan.measure(warmup, || {
            x.data_mut().copy_from_slice(&x0);
            model.step(x.data_mut())
        })
    })();
    let timing = match outcome {
        Ok(t) => t,
        Err(e) if e.is_out_of_memory() => {
            model.stop();
            return Ok(does_not_fit(row, &e));
        }
        Err(e) => return Err(cli_error(e)),
    };
    Ok(measured(row, ledger, timing.median, batch as f64))
}

/// Fill the timing and memory fields of `row` from `seconds` and the ledger's marks.
pub fn measured(mut row: ModelRow, ledger: &Ledger, seconds: f64, tokens: f64) -> ModelRow {
    let s = seconds.max(1e-9);
    let f = ledger.figures();
    row.seconds = Some(s);
    row.tokens_per_s = Some(tokens / s);
    row.latency_ms = Some(s * 1e3);
    row.weights_bytes = Some(f.weights);
    row.cache_bytes = Some(f.cache);
    row.activation_bytes = Some(f.activations);
    row.total_bytes = Some(f.total);
    row
}

/// Time to first token: a `tokens`-token prompt of one sequence through the whole model —
/// RetNet chunkwise (chunk `chunk`), the Transformer with causal attention, its KV cache
/// written.
///
/// # Errors
/// Any model error other than running out of memory.
pub fn prefill<T: NetElement>(
    model: &mut Model<T>,
    ledger: &Ledger,
    tokens: usize,
    chunk: usize,
    seed: u64,
) -> Result<ModelRow, CliError> {
    let cfg = model.config().clone();
    let row = ModelRow::empty(Sweep::Prefill, cfg.arch, 1, tokens, tokens);
    model.stop();
    ledger.reset_peaks();
    let outcome = (|| {
        model.start(1, tokens, seed)?;
        let mut x = ledger.tensor::<T>(Kind::Activations, "prompt", &[tokens, cfg.d_model])?;
        fill::uniform(x.data_mut(), seed, 1.0);
        let start = std::time::Instant::now();
        match model {
            Model::Retnet(net) => net.prefill(x.data_mut(), tokens, chunk)?,
            Model::Transformer(net) => net.prefill(x.data_mut(), tokens)?,
        }
        Ok::<f64, ModelError>(start.elapsed().as_secs_f64())
    })();
    let row = match outcome {
        Ok(seconds) => {
            let mut r = measured(row, ledger, seconds, tokens as f64);
            r.note = Some(match cfg.arch {
                Arch::Retnet => {
                    format!("chunkwise, chunk {chunk}; latency_ms is the time to first token")
                }
                Arch::Transformer => "causal softmax attention \
                    (retention_kernels::cpu::attention_prefill), KV cache written; latency_ms \
                    is the time to first token"
                    .into(),
            });
            r
        }
        Err(e) if e.is_out_of_memory() => does_not_fit(row, &e),
        Err(e) => return Err(cli_error(e)),
    };
    model.stop();
    Ok(row)
}

/// Weight elements a model allocated (what its ledger holds as weights).
pub fn params<T: Element>(ledger: &Ledger) -> u64 {
    ledger.figures().weights / std::mem::size_of::<T>() as u64
}
