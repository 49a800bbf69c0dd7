//! The bench points on a GPU-like device (`--device cuda` or `--device emulated`): the
//! catalog kernels the runtime launches, timed by the runtime's [`KernelTimer`] — device
//! events around repeated launches on a GPU, the emulator's *predicted* time otherwise — and
//! the state figure from a [`StatePool`] in that device's memory.

use retention_core::{Dtype, RetentionShape};
use retention_runtime::kernel_timing::KernelTimer;
use retention_runtime::{Device, MemoryPool, StateConfig, StatePool};

use crate::byte_size::saturating_product;
use crate::error::CliError;

use super::points::{Outcome, PointContext};
use super::report::{Op, Suite};

/// What a GPU point needs besides its own sizes.
pub struct GpuContext<'a> {
    /// Model, dtype, budget.
    pub cx: &'a PointContext<'a>,
    /// The device.
    pub device: &'a Device,
    /// Its kernel timer.
    pub timer: &'a KernelTimer,
    /// The input dtype.
    pub dtype: Dtype,
}

/// One decode step of `batch` sequences: the catalog decode kernel on one layer's states,
/// with the whole model's state reserved in a [`StatePool`] on the device (its memory pool's
/// high-water mark is the state figure).
///
/// # Errors
/// Kernel, pool or device errors.
pub fn retention_decode(
    g: &GpuContext<'_>,
    suite: Suite,
    batch: usize,
    context: usize,
) -> Result<Outcome, CliError> {
    let (cx, m) = (g.cx, g.cx.model);
    let needed = saturating_product(&[batch, m.layers, m.heads, m.dk, m.dv, 4]);
    let what = format!("retention decode batch {batch} context {context}");
    if let Some(skip) = cx.over_budget(&what, needed) {
        return Ok(skip);
    }
    let params = cx.params()?;
    let memory = MemoryPool::on(g.device, None)?;
    let cfg = StateConfig {
        heads: m.heads,
        dk: m.dk,
        dv: m.dv,
        params: params.clone(),
    };
    let mut pool = StatePool::new(g.device, &memory, &cfg, m.layers, batch)?;
    for _ in 0..batch {
        pool.alloc()?;
    }
    let state_bytes = memory.stats().high_water as u64;
    drop(pool);
    let t = g
        .timer
        .decode(&params.gammas, g.dtype, batch, (m.heads, m.dk, m.dv))?;
    let (kk, vv) = (m.dk as f64, m.dv as f64);
    let bh = (batch * m.heads) as f64;
    let elem = g.dtype.size_bytes() as f64;
    let bytes = bh * (8.0 * kk * vv + elem * (2.0 * kk + 2.0 * vv));
    let flops = bh * 4.0 * kk * vv;
    let mut r = cx.timed(
        cx.result(suite, Op::RetentionDecode, batch, context, 1),
        t.seconds,
        Some(bytes),
        flops,
    );
    r.state_bytes = Some(state_bytes);
    r.predicted = t.predicted;
    let api = super::device_api::decode_cost(g.device, &params, m, g.dtype, batch, 20)?;
    r.h2d_bytes = api.h2d_bytes;
    r.d2h_bytes = api.d2h_bytes;
    r.host_seconds = api.host_seconds;
    r.replay_seconds = api.replay_seconds;
    Ok(Outcome::Measured(r))
}

/// A `tokens`-token chunkwise prefill of one sequence with `chunk`, or a note when no
/// catalog kernel serves the model's head geometry with that chunk.
///
/// # Errors
/// Kernel or device errors.
pub fn prefill(g: &GpuContext<'_>, tokens: usize, chunk: usize) -> Result<Outcome, CliError> {
    let (cx, m) = (g.cx, g.cx.model);
    let params = cx.params()?;
    let shape = RetentionShape::new(1, tokens, m.heads, m.dk, m.dv)?;
    let t = match g.timer.chunkwise(&params.gammas, g.dtype, &shape, chunk) {
        Ok(t) => t,
        Err(retention_core::RetentionError::Unsupported { value, reason, .. }) => {
            return Ok(Outcome::Skipped(format!(
                "chunkwise T {tokens} C {chunk}: skipped, {value}: {reason}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let (h, kk, vv, tt) = (m.heads as f64, m.dk as f64, m.dv as f64, tokens as f64);
    let flops = h * tt * (2.0 * chunk.min(tokens) as f64 * (kk + vv) + 4.0 * kk * vv);
    let mut r = cx.timed(
        cx.result(Suite::Prefill, Op::Chunkwise, 1, tokens, tokens),
        t.seconds,
        None,
        flops,
    );
    r.chunk = Some(chunk);
    r.predicted = t.predicted;
    Ok(Outcome::Measured(r))
}

/// One softmax-attention decode over a `context`-token KV cache of one layer: the catalog's
/// split-and-combine attention kernels (flash-decoding), the baseline retention is compared
/// with on the same device.
///
/// # Errors
/// Kernel or device errors.
pub fn attention_decode(
    g: &GpuContext<'_>,
    suite: Suite,
    batch: usize,
    context: usize,
) -> Result<Outcome, CliError> {
    let (cx, m) = (g.cx, g.cx.model);
    let elem = g.dtype.size_bytes() as u64;
    let layer_cache = saturating_product(&[batch, m.heads, context, m.dk.saturating_add(m.dv)])
        .saturating_mul(elem);
    let what = format!("attention decode batch {batch} context {context}");
    if let Some(skip) = cx.over_budget(&what, layer_cache) {
        return Ok(skip);
    }
    let t = g
        .timer
        .attention_decode(g.dtype, batch, context, (m.heads, m.dk, m.dv))?;
    let bh = (batch * m.heads) as f64;
    let (kk, vv, l) = (m.dk as f64, m.dv as f64, context as f64);
    let bytes = layer_cache as f64 + bh * elem as f64 * (kk + vv);
    let flops = bh * 2.0 * l * (kk + vv);
    let mut r = cx.timed(
        cx.result(suite, Op::AttentionDecode, batch, context, 1),
        t.seconds,
        Some(bytes),
        flops,
    );
    r.kv_cache_bytes = Some(layer_cache * m.layers as u64);
    r.predicted = t.predicted;
    Ok(Outcome::Measured(r))
}

/// A `tokens`-token parallel-form prefill of one sequence: the catalog's flash-style parallel
/// kernel, or a note when none serves the model's head geometry.
///
/// # Errors
/// Kernel or device errors.
pub fn prefill_parallel(g: &GpuContext<'_>, tokens: usize) -> Result<Outcome, CliError> {
    let (cx, m) = (g.cx, g.cx.model);
    let params = cx.params()?;
    let shape = RetentionShape::new(1, tokens, m.heads, m.dk, m.dv)?;
    let t = match g.timer.parallel(&params.gammas, g.dtype, &shape) {
        Ok(t) => t,
        Err(retention_core::RetentionError::Unsupported { value, reason, .. }) => {
            return Ok(Outcome::Skipped(format!(
                "parallel T {tokens}: skipped, {value}: {reason}"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let (h, kk, vv, tt) = (m.heads as f64, m.dk as f64, m.dv as f64, tokens as f64);
    // The causal half of Q·Kᵀ and of A·V.
    let flops = h * tt * (tt + 1.0) * (kk + vv);
    let mut r = cx.timed(
        cx.result(Suite::Prefill, Op::Parallel, 1, tokens, tokens),
        t.seconds,
        None,
        flops,
    );
    r.predicted = t.predicted;
    Ok(Outcome::Measured(r))
}
