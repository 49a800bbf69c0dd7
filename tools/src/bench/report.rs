//! The bench report: what every measurement records, and its JSON form — schema 2, documented
//! field by field in `tools/docs/bench-json.md` (a test holds the output to that page).
//!
//! Conventions: `seconds` is the median wall time of one call of `op` on **one layer** (one
//! decode step of `batch` sequences; one query per sequence over a `context`-token KV cache;
//! one `tokens`-token prefill of `batch` sequences). Throughput and memory are for the **whole
//! model**: `tokens_per_s = batch·tokens / (seconds·layers)`; `state_bytes` is every layer's
//! recurrent state for the batch (the state pool's high-water mark), `kv_cache_bytes` every
//! layer's KV cache for the batch.

use serde::Serialize;

use crate::model_arg::ModelShape;

/// The version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Which suite a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Decode latency against context and batch.
    Decode,
    /// Prefill throughput against T and chunk.
    Prefill,
    /// Retention against the attention KV-cache baseline.
    Compare,
}

/// What was timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// One recurrent decode step (`retention_kernels::cpu::decode_step`).
    RetentionDecode,
    /// One softmax-attention decode over a KV cache (`retention_kernels::cpu::attention_decode`).
    AttentionDecode,
    /// Chunkwise prefill (`retention_kernels::cpu::chunkwise`).
    Chunkwise,
    /// Parallel-form prefill (`retention_kernels::cpu::parallel`).
    Parallel,
}

impl Op {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Op::RetentionDecode => "retention_decode",
            Op::AttentionDecode => "attention_decode",
            Op::Chunkwise => "chunkwise",
            Op::Parallel => "parallel",
        }
    }
}

/// One measurement (one row of the table, one element of `results`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchResult {
    /// The suite.
    pub suite: Suite,
    /// The op.
    pub op: Op,
    /// Sequences per call.
    pub batch: usize,
    /// Tokens already in context (decode ops; for prefill, equal to `tokens`).
    pub context: usize,
    /// New tokens per sequence per call (1 for decode).
    pub tokens: usize,
    /// Heads H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
    /// Chunk size (chunkwise only).
    pub chunk: Option<usize>,
    /// Input dtype: `f32`, `f16` or `bf16`.
    pub dtype: &'static str,
    /// Median seconds per call on one layer.
    pub seconds: f64,
    /// Whole-model tokens per second.
    pub tokens_per_s: f64,
    /// Bytes moved per call over `seconds`, in GB/s (memory-bound ops).
    pub gbps: Option<f64>,
    /// FLOPs per call over `seconds`, in GFLOP/s.
    pub gflops: Option<f64>,
    /// Whole-model recurrent state of the batch, bytes (retention decode).
    pub state_bytes: Option<u64>,
    /// Whole-model KV cache of the batch, bytes (attention decode).
    pub kv_cache_bytes: Option<u64>,
    /// True when `seconds` is the PTX emulator's *prediction* for a GPU, not a measurement.
    pub predicted: bool,
    /// Host-to-device bytes of one call, from the runtime's stream counter.
    pub h2d_bytes: u64,
    /// Device-to-host bytes of one call, from the runtime's stream counter.
    pub d2h_bytes: u64,
    /// On a CUDA device: median host seconds to enqueue one call through the public device
    /// API (no synchronisation); `None` elsewhere.
    pub host_seconds: Option<f64>,
    /// On a CUDA device, decode suite: median seconds per layer of a whole decode step (every
    /// layer) replayed as one captured graph; `None` elsewhere.
    pub replay_seconds: Option<f64>,
}

/// The machine's own limits, measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    /// Large-buffer copy, bytes read + written per second, GB/s (on a GPU: device memory to
    /// device memory, timed with events).
    pub copy_gbps: f64,
    /// f32 GEMM (the `gemm` crate, 512³, all threads), GFLOP/s; `None` on GPU devices (the
    /// library ships no GEMM kernel to measure).
    pub gemm_gflops: Option<f64>,
    /// True when the limits are the emulator's GPU model (its peak figures), not measured.
    pub predicted: bool,
    /// The emulator's GPU model (`a100`, `h100`, `h200`) when `predicted`; else `None`.
    pub gpu_model: Option<&'static str>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// `retention <version>`.
    pub tool: String,
    /// The device, e.g. `cpu (AMD EPYC, 2 threads)`.
    pub device: String,
    /// The model geometry measured.
    pub model: ModelShape,
    /// Limits measured in this run.
    pub limits: Limits,
    /// Measurements, in suite order.
    pub results: Vec<BenchResult>,
    /// How the numbers were obtained, and any configuration skipped (and why).
    pub notes: Vec<String>,
}

impl Report {
    /// The report as pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// The serializer's error (not expected: the report holds only strings and finite numbers).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}
