//! `--device emulated --suite model`: the emulator's *predicted* time of the retention
//! decode kernel (RetNet) and the attention decode kernel (its Transformer twin's heads) at
//! batch 1, times the layer count — the mixer part of a decode step only. The whole step runs
//! on the emulated device (`net::DeviceNet`, tested in CI), but its GEMMs run on the host and
//! the emulator has no time model for them, so projections, FFN and weights are left out; the
//! rows say so, carry no memory figures, and the summary's ratios stay null (a mixer-only
//! ratio is not the paper's whole-model Figure 1).

use retention_core::Gammas;
use retention_runtime::Device;
use retention_runtime::kernel_timing::KernelTimer;

use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::progress;

use super::super::limits::LimitSizes;
use super::super::report::Limits;
use super::grid::ModelGrid;
use super::net::{Arch, NetConfig};
use super::report::{ModelInfo, ModelReport, ModelRow, SCHEMA_VERSION, Summary, Sweep};

/// The one context the emulator predicts (each emulated launch takes seconds of CPU).
const CONTEXT: usize = 2048;

/// Predicted mixer times of `cfg` and its Transformer twin on `device` (emulated).
///
/// # Errors
/// Device or kernel errors other than a geometry no kernel serves (that is a note row).
pub fn collect(device: &Device, cfg: &NetConfig, dtype: DtypeArg) -> Result<ModelReport, CliError> {
    let timer = KernelTimer::new(device, 1)?;
    let bar = progress::bar(3, "model");
    bar.set_message("copy bandwidth (emulated)");
    let limits = Limits {
        copy_gbps: timer.copy_gbps(LimitSizes::QUICK.copy_floats)?,
        gemm_gflops: None,
        predicted: true,
        gpu_model: timer.gpu_model().map(|m| m.name),
    };
    bar.inc(1);
    let twin = cfg.transformer_twin();
    let mut rows = Vec::new();
    for c in [cfg, &twin] {
        bar.set_message(format!("{} decode kernel (emulated)", c.arch.name()));
        let t = match c.arch {
            Arch::Retnet => Gammas::retnet(c.heads)
                .map_err(CliError::from)
                .and_then(|g| Ok(timer.decode(&g, dtype.dtype(), 1, (c.heads, c.dk, c.dv))?)),
            Arch::Transformer => {
                Ok(timer.attention_decode(dtype.dtype(), 1, CONTEXT, (c.heads, c.dk, c.dv))?)
            }
        };
        let mut row = ModelRow::empty(Sweep::Context, c.arch, 1, CONTEXT, 1);
        match t {
            Ok(t) => {
                let s = t.seconds * c.layers as f64;
                row.seconds = Some(s);
                row.tokens_per_s = Some(1.0 / s.max(1e-12));
                row.latency_ms = Some(s * 1e3);
                row.predicted = t.predicted;
                row.note = Some(format!(
                    "PREDICTED by the emulator's GPU model: the {} decode kernel × {} layers \
                     only (no projections, FFN or weights)",
                    match c.arch {
                        Arch::Retnet => "retention",
                        Arch::Transformer => "attention",
                    },
                    c.layers
                ));
            }
            Err(CliError::Retention(e)) => {
                row.note = Some(format!("not predicted: {e}"));
            }
            Err(e) => return Err(e),
        }
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let grid = ModelGrid {
        contexts: vec![CONTEXT],
        batch_contexts: Vec::new(),
        batches: vec![1],
        prefill_tokens: 0,
        context_warmup: 0,
        batch_warmup: 0,
        max_runs: 1,
        ..ModelGrid::quick()
    };
    let predicted_note = format!(
        "emulated device: seconds are PREDICTED (one emulated launch timed by the \
         emulator's time model of the {}), for the retention and attention decode \
         kernels only, times the layer count; no whole-model step, memory or ratios \
         (the emulator has no time model for the GEMMs of a whole-model step)",
        limits.gpu_model.unwrap_or("GPU")
    );
    Ok(ModelReport {
        schema: SCHEMA_VERSION,
        suite: "model",
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: format!("{device} (PTX emulator; predicted times)"),
        dtype: dtype.name(),
        memory_limit_bytes: 0,
        limits,
        models: ModelInfo::configured(cfg),
        grid,
        rows,
        summary: Summary::empty(&cfg.name, CONTEXT),
        notes: vec![
            predicted_note,
            "params: the configuration's count (no weights are allocated on this device)".into(),
        ],
    })
}
