//! One measured point of each kind: a retention decode step (through the runtime's
//! `StatePool`, whose memory pool's high-water mark is the state figure), an attention decode
//! over a KV cache and a chunkwise or parallel prefill (the CPU kernels of
//! `retention_kernels::cpu`, called directly: the runtime has no attention op, and the
//! prefill sweep varies what the pool fixes).

use retention_core::Gammas;
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, MemoryPool, Slot, StateConfig, StatePool};

use crate::byte_size::saturating_product;
use crate::error::CliError;
use crate::model_arg::ModelShape;
use crate::random_tensor::random;
use crate::timing::RepeatPlan;

use super::report::{BenchResult, Op, Suite};

/// What a point needs besides its own sizes.
pub struct PointContext<'a> {
    /// The model.
    pub model: &'a ModelShape,
    /// Input dtype name (`f32`, `f16`, `bf16`).
    pub dtype: &'static str,
    /// Repetitions.
    pub plan: RepeatPlan,
    /// Bytes a point may allocate.
    pub memory_budget: u64,
}

/// A measured point, or why it was skipped.
pub enum Outcome {
    /// Measured.
    Measured(BenchResult),
    /// Not run; the reason names the point and the memory it would need.
    Skipped(String),
}

const MIB: f64 = 1024.0 * 1024.0;

impl PointContext<'_> {
    pub(super) fn params(&self) -> Result<RetentionParams, CliError> {
        Ok(RetentionParams::new(
            Gammas::retnet(self.model.heads)?,
            None,
        ))
    }

    pub(super) fn over_budget(&self, what: &str, bytes: u64) -> Option<Outcome> {
        (bytes > self.memory_budget).then(|| {
            Outcome::Skipped(format!(
                "{what}: skipped, needs {:.0} MiB (budget {:.0} MiB)",
                bytes as f64 / MIB,
                self.memory_budget as f64 / MIB
            ))
        })
    }

    pub(super) fn result(
        &self,
        suite: Suite,
        op: Op,
        batch: usize,
        context: usize,
        tokens: usize,
    ) -> BenchResult {
        let m = self.model;
        BenchResult {
            suite,
            op,
            batch,
            context,
            tokens,
            heads: m.heads,
            dk: m.dk,
            dv: m.dv,
            chunk: None,
            dtype: self.dtype,
            seconds: 0.0,
            tokens_per_s: 0.0,
            gbps: None,
            gflops: None,
            state_bytes: None,
            kv_cache_bytes: None,
            predicted: false,
            h2d_bytes: 0,
            d2h_bytes: 0,
            host_seconds: None,
            replay_seconds: None,
        }
    }

    /// Fill the timing-derived fields of `r` from the median `seconds` of one layer's call.
    pub(super) fn timed(
        &self,
        mut r: BenchResult,
        seconds: f64,
        bytes: Option<f64>,
        flops: f64,
    ) -> BenchResult {
        // A call is never free; this floor keeps every rate finite on a coarse clock.
        let s = seconds.max(1e-9);
        r.seconds = s;
        r.tokens_per_s = (r.batch * r.tokens) as f64 / (s * self.model.layers as f64);
        r.gbps = bytes.map(|b| b / s / 1e9);
        r.gflops = Some(flops / s / 1e9);
        r
    }
}

/// One decode step of `batch` sequences through the runtime's [`StatePool::step`], cycling
/// through every layer so the working set is the model's state (a single layer's state could
/// sit in cache and flatter the figure). The state does not grow with context; each context
/// is measured, not copied.
///
/// # Errors
/// Kernel or pool errors (none expected for a valid model).
pub fn retention_decode<T: CpuElement>(
    cx: &PointContext<'_>,
    suite: Suite,
    batch: usize,
    context: usize,
    seed: u64,
) -> Result<Outcome, CliError> {
    let m = cx.model;
    let state_bytes_needed = saturating_product(&[batch, m.layers, m.heads, m.dk, m.dv, 4]);
    let what = format!("retention decode batch {batch} context {context}");
    if let Some(skip) = cx.over_budget(&what, state_bytes_needed) {
        return Ok(skip);
    }
    let params = cx.params()?;
    let memory = MemoryPool::new();
    let cfg = StateConfig {
        heads: m.heads,
        dk: m.dk,
        dv: m.dv,
        params,
    };
    let mut pool = StatePool::new(&Device::Cpu, &memory, &cfg, m.layers, batch)?;
    let slots = (0..batch)
        .map(|_| pool.alloc())
        .collect::<Result<Vec<Slot>, _>>()?;
    let state_bytes = memory.stats().high_water as u64;
    let q = random::<T>(&[batch, m.heads, m.dk], seed)?;
    let k = random::<T>(&[batch, m.heads, m.dk], seed + 1)?;
    let v = random::<T>(&[batch, m.heads, m.dv], seed + 2)?;
    let before = pool.stream().transfers();
    std::hint::black_box(pool.step(0, &slots, &q, &k, &v)?);
    let moved = pool.stream().transfers().since(&before);
    let mut layer = 0;
    let timing = cx.plan.measure(m.layers, || {
        std::hint::black_box(pool.step(layer, &slots, &q, &k, &v)?);
        layer = (layer + 1) % m.layers;
        Ok::<(), CliError>(())
    })?;
    let (kk, vv) = (m.dk as f64, m.dv as f64);
    let bh = (batch * m.heads) as f64;
    let elem = std::mem::size_of::<T>() as f64;
    // f32 state read + written, q, k, v read and o written in the input dtype.
    let bytes = bh * (8.0 * kk * vv + elem * (2.0 * kk + 2.0 * vv));
    // γS + kᵀv and q·S: two multiply-adds per state element.
    let flops = bh * 4.0 * kk * vv;
    let mut r = cx.timed(
        cx.result(suite, Op::RetentionDecode, batch, context, 1),
        timing.median,
        Some(bytes),
        flops,
    );
    r.state_bytes = Some(state_bytes);
    r.h2d_bytes = moved.h2d_bytes;
    r.d2h_bytes = moved.d2h_bytes;
    Ok(Outcome::Measured(r))
}

/// One softmax-attention decode step of `batch` sequences over a `context`-token KV cache of
/// one layer (caches of a few thousand tokens are far beyond any CPU cache already).
///
/// # Errors
/// Kernel errors (none expected for a valid model).
pub fn attention_decode<T: CpuElement>(
    cx: &PointContext<'_>,
    suite: Suite,
    batch: usize,
    context: usize,
    seed: u64,
) -> Result<Outcome, CliError> {
    let m = cx.model;
    let elem = std::mem::size_of::<T>() as u64;
    let layer_cache = saturating_product(&[batch, m.heads, context, m.dk.saturating_add(m.dv)])
        .saturating_mul(elem);
    let what = format!("attention decode batch {batch} context {context}");
    if let Some(skip) = cx.over_budget(&what, layer_cache) {
        return Ok(skip);
    }
    let q = random::<T>(&[batch, m.heads, m.dk], seed)?;
    let k_cache = random::<T>(&[batch, m.heads, context, m.dk], seed + 1)?;
    let v_cache = random::<T>(&[batch, m.heads, context, m.dv], seed + 2)?;
    let allocated = ((k_cache.data().len() + v_cache.data().len()) as u64) * elem;
    let timing = cx.plan.measure(1, || {
        std::hint::black_box(cpu::attention_decode(&q, &k_cache, &v_cache, None)?);
        Ok::<(), CliError>(())
    })?;
    let bh = (batch * m.heads) as f64;
    let (kk, vv, l) = (m.dk as f64, m.dv as f64, context as f64);
    let bytes = allocated as f64 + bh * elem as f64 * (kk + vv);
    // q·k_t and p_t·v_t for every cached token.
    let flops = bh * 2.0 * l * (kk + vv);
    let mut r = cx.timed(
        cx.result(suite, Op::AttentionDecode, batch, context, 1),
        timing.median,
        Some(bytes),
        flops,
    );
    r.kv_cache_bytes = Some(allocated * m.layers as u64);
    Ok(Outcome::Measured(r))
}

/// A `tokens`-token prefill of one sequence: chunkwise with `chunk`, or the parallel form
/// when `chunk` is `None`.
///
/// # Errors
/// Kernel errors (none expected for a valid model).
pub fn prefill<T: CpuElement>(
    cx: &PointContext<'_>,
    tokens: usize,
    chunk: Option<usize>,
    seed: u64,
) -> Result<Outcome, CliError> {
    let m = cx.model;
    let elem = std::mem::size_of::<T>() as u64;
    let io =
        saturating_product(&[tokens, m.heads, 2, m.dk.saturating_add(m.dv)]).saturating_mul(elem);
    let op = if chunk.is_some() {
        Op::Chunkwise
    } else {
        Op::Parallel
    };
    let what = format!("{} T {tokens}", op.name());
    if let Some(skip) = cx.over_budget(
        &what,
        io.saturating_add(saturating_product(&[m.heads, m.dk, m.dv, 4])),
    ) {
        return Ok(skip);
    }
    let params = cx.params()?;
    let q = random::<T>(&[1, tokens, m.heads, m.dk], seed)?;
    let k = random::<T>(&[1, tokens, m.heads, m.dk], seed + 1)?;
    let v = random::<T>(&[1, tokens, m.heads, m.dv], seed + 2)?;
    let timing = cx.plan.measure(1, || {
        match chunk {
            Some(c) => {
                std::hint::black_box(cpu::chunkwise(&q, &k, &v, &params, c, None)?);
            }
            None => {
                std::hint::black_box(cpu::parallel(&q, &k, &v, &params)?);
            }
        }
        Ok::<(), CliError>(())
    })?;
    let (h, kk, vv, t) = (m.heads as f64, m.dk as f64, m.dv as f64, tokens as f64);
    let flops = match chunk {
        // ARCHITECTURE §5: T·[2C(K+V) + 4KV] per head (C at most T).
        Some(c) => h * t * (2.0 * c.min(tokens) as f64 * (kk + vv) + 4.0 * kk * vv),
        // The causal half of Q·Kᵀ and of A·V.
        None => h * t * (t + 1.0) * (kk + vv),
    };
    let mut r = cx.timed(
        cx.result(Suite::Prefill, op, 1, tokens, tokens),
        timing.median,
        None,
        flops,
    );
    r.chunk = chunk;
    Ok(Outcome::Measured(r))
}
