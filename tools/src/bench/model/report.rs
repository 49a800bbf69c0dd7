//! The model suite's report and its JSON form (schema 1 of `"suite": "model"`, documented
//! field by field in `tools/docs/bench-json.md`).
//!
//! Conventions: `seconds` is the median wall time of one decode step of the **whole model**
//! for `batch` sequences (every layer: norms, projections, retention or attention, FFN), or
//! of the whole prefill; memory figures are high-water marks measured while the point ran.

use serde::Serialize;

use super::super::report::Limits;
use super::grid::ModelGrid;
use super::net::{Arch, NetConfig};

/// The version of this layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Which sweep a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sweep {
    /// Batch 1 against context: memory and latency against length.
    Context,
    /// Batch against context: throughput and latency against batch.
    Batch,
    /// Time to first token.
    Prefill,
}

/// One architecture as built: its geometry and the parameters it allocated.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The geometry.
    #[serde(flatten)]
    pub config: NetConfig,
    /// Weights allocated (every layer, norms included).
    pub params: u64,
}

impl ModelInfo {
    /// `cfg` and `cfg`'s Transformer twin with their configured parameter counts (where no
    /// host weights are allocated to count).
    pub fn configured(cfg: &NetConfig) -> Vec<Self> {
        [cfg.clone(), cfg.transformer_twin()]
            .into_iter()
            .map(|c| Self {
                params: c.params() as u64,
                config: c,
            })
            .collect()
    }
}

/// One point.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    /// The sweep.
    pub sweep: Sweep,
    /// The architecture.
    pub arch: Arch,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens each sequence's step sees (prefill: the prompt length).
    pub context: usize,
    /// New tokens per sequence: 1 for decode, the prompt length for prefill.
    pub tokens: usize,
    /// False when the point did not fit the memory limit (nothing timed).
    pub fits: bool,
    /// Median seconds of one whole-model step (or the whole prefill); null if not measured.
    pub seconds: Option<f64>,
    /// `batch · tokens / seconds`.
    pub tokens_per_s: Option<f64>,
    /// Milliseconds per token a sequence waits: one step (prefill: time to first token).
    pub latency_ms: Option<f64>,
    /// Measured bytes of weights.
    pub weights_bytes: Option<u64>,
    /// Measured bytes of RetNet's state or the Transformer's KV cache (all layers, batch).
    pub cache_bytes: Option<u64>,
    /// Measured peak bytes of activations during the step.
    pub activation_bytes: Option<u64>,
    /// Measured peak of all of it together.
    pub total_bytes: Option<u64>,
    /// True when `seconds` is a prediction, not a measurement (never, on the CPU).
    pub predicted: bool,
    /// Why the point was not measured, if it was not.
    pub note: Option<String>,
}

impl ModelRow {
    /// A row with nothing measured yet.
    pub fn empty(sweep: Sweep, arch: Arch, batch: usize, context: usize, tokens: usize) -> Self {
        Self {
            sweep,
            arch,
            batch,
            context,
            tokens,
            fits: true,
            seconds: None,
            tokens_per_s: None,
            latency_ms: None,
            weights_bytes: None,
            cache_bytes: None,
            activation_bytes: None,
            total_bytes: None,
            predicted: false,
            note: None,
        }
    }
}

/// The paper's Figure-1 ratios at one model and context (Transformer over RetNet; null when
/// a side could not be measured).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The model.
    pub model: String,
    /// The context (8192 when the sweep ran it).
    pub context: usize,
    /// Transformer total memory / RetNet total memory at batch 1.
    pub memory_ratio: Option<f64>,
    /// RetNet tokens/s at its best batch / Transformer tokens/s at its best batch.
    pub throughput_ratio: Option<f64>,
    /// Transformer latency per token / RetNet latency per token at batch 1.
    pub latency_ratio: Option<f64>,
    /// RetNet's batch of highest tokens/s.
    pub retnet_best_batch: Option<usize>,
    /// The Transformer's batch of highest tokens/s.
    pub transformer_best_batch: Option<usize>,
    /// Per batch-sweep context, the largest batch each architecture fitted.
    pub max_batch: Vec<MaxBatch>,
    /// Prompt length of the prefill rows.
    pub prefill_tokens: usize,
    /// RetNet's time to first token (chunkwise prefill), milliseconds.
    pub retnet_ttft_ms: Option<f64>,
    /// The Transformer's time to first token (causal attention prefill), milliseconds.
    pub transformer_ttft_ms: Option<f64>,
    /// `transformer_ttft_ms / retnet_ttft_ms`.
    pub ttft_ratio: Option<f64>,
}

impl Summary {
    /// No ratios measured: every figure null (the emulated device, CUDA's fixed grid).
    pub fn empty(model: &str, context: usize) -> Self {
        Self {
            model: model.into(),
            context,
            memory_ratio: None,
            throughput_ratio: None,
            latency_ratio: None,
            retnet_best_batch: None,
            transformer_best_batch: None,
            max_batch: Vec::new(),
            prefill_tokens: 0,
            retnet_ttft_ms: None,
            transformer_ttft_ms: None,
            ttft_ratio: None,
        }
    }
}

/// The largest batch that fitted at one context.
#[derive(Debug, Clone, Serialize)]
pub struct MaxBatch {
    /// The context.
    pub context: usize,
    /// RetNet's largest batch that fitted (null: not even 1).
    pub retnet: Option<usize>,
    /// The Transformer's.
    pub transformer: Option<usize>,
    /// True when RetNet's batch `retnet + 1` (or batch 1, when `retnet` is null) was run and
    /// did not fit: `retnet` is its exact limit. False when the search stopped at the grid's
    /// `batch_cap` first.
    pub retnet_ran_out: bool,
    /// The same for the Transformer: where it runs out of memory.
    pub transformer_ran_out: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Always `model`.
    pub suite: &'static str,
    /// `retention <version>`.
    pub tool: String,
    /// The device measured.
    pub device: String,
    /// Element type of weights, activations and the KV cache (`f32` or `f16`).
    pub dtype: &'static str,
    /// Bytes each model may use.
    pub memory_limit_bytes: u64,
    /// The machine's copy and GEMM limits measured in this run.
    pub limits: Limits,
    /// The RetNet and the Transformer as built.
    pub models: Vec<ModelInfo>,
    /// What was swept.
    pub grid: ModelGrid,
    /// The points, sweep by sweep.
    pub rows: Vec<ModelRow>,
    /// The three ratios.
    pub summary: Summary,
    /// How the numbers were obtained, and what was not measured.
    pub notes: Vec<String>,
}

impl ModelReport {
    /// Pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// The serializer's (not expected).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}
