//! One point of the train suite: the chunkwise forward that saves its f32 chunk states
//! (`Retention::chunkwise_for_training`) and the backward from them
//! (`Retention::chunkwise_backward_saved`) on the CPU, timed apart, with the peak heap bytes
//! of one forward + backward measured by the counting allocator ([`super::alloc`]).
//!
//! FLOPs per (row, head) and token, counted from the products each kernel runs (T a multiple
//! of C): forward 2C(K+V) + 4KV (Q Kᵀ, its product with V, Q R and the state update;
//! ARCHITECTURE §5); backward 2C(3K+2V) + 8KV (the nine products per chunk of
//! `retention_kernels::cpu`'s backward kernel: 2L²(3K+2V) + 8LKV per chunk of L tokens).
//! Element-wise work (decays, masks, d log γ's reductions) is not counted.

use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, Retention};
use serde::Serialize;

use super::alloc;
use crate::error::CliError;
use crate::random_tensor::random;
use crate::timing::RepeatPlan;

/// Chunk size of the forward and backward.
pub const CHUNK: usize = 64;

/// A problem shape: a name, rows, heads and head dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainShape {
    /// `1.3b`, `2.7b`, `6.7b` (the paper's heads), `fla` or `custom`.
    pub name: &'static str,
    /// Rows B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
}

impl TrainShape {
    /// FLOPs of the forward and of the backward at `tokens` tokens.
    pub fn flops(&self, tokens: usize) -> (f64, f64) {
        let (c, k, v) = (CHUNK as f64, self.dk as f64, self.dv as f64);
        let pairs = (self.batch * self.heads * tokens) as f64;
        let fwd = 2.0 * c * (k + v) + 4.0 * k * v;
        let bwd = 2.0 * c * (3.0 * k + 2.0 * v) + 8.0 * k * v;
        (pairs * fwd, pairs * bwd)
    }

    /// Bytes a forward + backward needs at least: q, k, v, do, o, dq, dk, dv in `elem`-byte
    /// elements and the saved f32 chunk states (the budget check's estimate).
    pub fn estimate_bytes(&self, tokens: usize, elem: usize) -> u64 {
        let rows = (self.batch * tokens * self.heads) as u64;
        let (k, v) = (self.dk as u64, self.dv as u64);
        let tensors = rows * (4 * k + 4 * v) * elem as u64;
        tensors + self.state_bytes(tokens)
    }

    /// Bytes of the saved f32 chunk states: K·V·4 per chunk and head of every row.
    pub fn state_bytes(&self, tokens: usize) -> u64 {
        let chunks = (self.batch * tokens.div_ceil(CHUNK) * self.heads) as u64;
        chunks * (self.dk * self.dv * 4) as u64
    }
}

/// One measured point (one element of `rows`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainRow {
    /// Always `train`.
    pub suite: &'static str,
    /// The shape's name.
    pub shape: &'static str,
    /// Rows B.
    pub batch: usize,
    /// Tokens T per row.
    pub tokens: usize,
    /// Heads H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
    /// Chunk size.
    pub chunk: usize,
    /// Input dtype.
    pub dtype: &'static str,
    /// Median seconds of the forward (saving states).
    pub forward_seconds: f64,
    /// Median seconds of the backward from the saved states.
    pub backward_seconds: f64,
    /// forward + backward.
    pub seconds: f64,
    /// Counted FLOPs of forward + backward.
    pub flops: f64,
    /// flops / seconds / 1e9.
    pub gflops: f64,
    /// gflops over the gemm crate's f32 GFLOP/s measured in this run.
    pub gemm_fraction: Option<f64>,
    /// Measured peak heap bytes of one forward + backward, inputs included.
    pub peak_bytes: u64,
    /// Of which the saved f32 chunk states.
    pub saved_state_bytes: u64,
}

/// Measure `shape` at `tokens` tokens in dtype `T` (`dtype` its name).
///
/// # Errors
/// Any runtime error (none for the shapes the suite builds).
pub fn measure<T: CpuElement>(
    shape: &TrainShape,
    tokens: usize,
    dtype: &'static str,
    (plan, gemm_gflops): (RepeatPlan, Option<f64>),
) -> Result<TrainRow, CliError> {
    let TrainShape {
        batch: b,
        heads: h,
        dk,
        dv,
        ..
    } = *shape;
    let base = alloc::in_use();
    alloc::reset_peak();
    let q: HostTensor<T> = random(&[b, tokens, h, dk], 1)?;
    let k: HostTensor<T> = random(&[b, tokens, h, dk], 2)?;
    let v: HostTensor<T> = random(&[b, tokens, h, dv], 3)?;
    let d_o: HostTensor<T> = random(&[b, tokens, h, dv], 4)?;
    let ret = Retention::new(&Device::Cpu, RetentionParams::new(Gammas::retnet(h)?, None))?;
    let qkv = (&q, &k, &v);
    // One untimed step: the peak, and a warm-up.
    let fwd = ret.chunkwise_for_training(qkv, CHUNK, None)?;
    let grads = ret.chunkwise_backward_saved(qkv, &fwd, &d_o, None)?;
    let peak_bytes = alloc::peak().saturating_sub(base) as u64;
    drop(grads);
    let forward = plan.measure(0, || ret.chunkwise_for_training(qkv, CHUNK, None).map(drop))?;
    let backward = plan.measure(0, || {
        ret.chunkwise_backward_saved(qkv, &fwd, &d_o, None)
            .map(drop)
    })?;
    let row = TrainRow::new(shape, (tokens, dtype), (forward.median, backward.median));
    Ok(TrainRow {
        gemm_fraction: gemm_gflops.map(|g| row.gflops / g),
        peak_bytes,
        saved_state_bytes: shape.state_bytes(tokens),
        ..row
    })
}

impl TrainRow {
    /// The row of `shape` at `tokens` tokens in `dtype` from the median forward and backward
    /// seconds: FLOPs counted by [`TrainShape::flops`]; no gemm fraction, peak or saved
    /// states yet (the caller fills what its device measures).
    pub fn new(
        shape: &TrainShape,
        (tokens, dtype): (usize, &'static str),
        (forward_seconds, backward_seconds): (f64, f64),
    ) -> Self {
        let (ff, fb) = shape.flops(tokens);
        let seconds = forward_seconds + backward_seconds;
        TrainRow {
            suite: "train",
            shape: shape.name,
            batch: shape.batch,
            tokens,
            heads: shape.heads,
            dk: shape.dk,
            dv: shape.dv,
            chunk: CHUNK,
            dtype,
            forward_seconds,
            backward_seconds,
            seconds,
            flops: ff + fb,
            gflops: (ff + fb) / seconds / 1e9,
            gemm_fraction: None,
            peak_bytes: 0,
            saved_state_bytes: 0,
        }
    }
}
