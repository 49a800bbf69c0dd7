//! The public device API measured beside the kernel timings: for one decode step through
//! [`StatePool::stage`] + [`StatePool::step_into`] on device tensors, the host↔device bytes
//! the runtime's stream counter saw, and on a CUDA device the host time to enqueue a call and
//! the per-layer latency of a whole step (every layer) replayed as one captured graph.

use std::time::Instant;

use retention_core::{Dtype, Result};
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, DeviceDtype, DeviceTensor, MemoryPool, Retention, Stream};

use crate::model_arg::ModelShape;

/// What one decode step through the device API cost besides kernel time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeApiCost {
    /// Host-to-device bytes of one call (the staged slot rows).
    pub h2d_bytes: u64,
    /// Device-to-host bytes of one call.
    pub d2h_bytes: u64,
    /// Median host seconds to enqueue one call (CUDA only).
    pub host_seconds: Option<f64>,
    /// Median seconds per layer of a replayed whole-step graph (CUDA only).
    pub replay_seconds: Option<f64>,
}

/// Measures [`DecodeApiCost`] for `batch` sequences of `model` on `device`, `reps` times.
///
/// # Errors
/// Runtime errors (allocation, launches, capture).
pub fn decode_cost(
    device: &Device,
    params: &RetentionParams,
    model: &ModelShape,
    dtype: Dtype,
    batch: usize,
    reps: usize,
) -> Result<DecodeApiCost> {
    let m = model;
    let ret = Retention::new(device, params.clone())?;
    let mut pool = ret.state_pool(m.heads, m.dk, m.dv, m.layers, batch)?;
    let slots = (0..batch)
        .map(|_| pool.alloc())
        .collect::<Result<Vec<_>>>()?;
    let stream = Stream::new(device)?;
    let mem = MemoryPool::on(device, None)?;
    let tensor = |d: usize| {
        DeviceTensor::zeros(&mem, device, DeviceDtype::from(dtype), &[batch, m.heads, d])
    };
    let (q, k, v, mut o) = (tensor(m.dk)?, tensor(m.dk)?, tensor(m.dv)?, tensor(m.dv)?);
    let before = stream.transfers();
    pool.stage(&slots, Some(&stream))?;
    pool.step_into(0, (&q, &k, &v), &mut o, Some(&stream))?;
    let moved = stream.transfers().since(&before);
    let mut cost = DecodeApiCost {
        h2d_bytes: moved.h2d_bytes,
        d2h_bytes: moved.d2h_bytes,
        host_seconds: None,
        replay_seconds: None,
    };
    if !matches!(device, Device::Cuda(_)) {
        return Ok(cost);
    }
    let mut host = Vec::with_capacity(reps);
    for i in 0..reps.max(1) {
        let t0 = Instant::now();
        pool.stage(&slots, Some(&stream))?;
        pool.step_into(i % m.layers, (&q, &k, &v), &mut o, Some(&stream))?;
        host.push(t0.elapsed().as_secs_f64());
    }
    stream.synchronize()?;
    cost.host_seconds = Some(median(&mut host));
    stream.begin_capture()?;
    for layer in 0..m.layers {
        pool.step_into(layer, (&q, &k, &v), &mut o, Some(&stream))?;
    }
    let graph = stream.end_capture()?;
    graph.replay()?;
    let mut replays = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = stream.record()?;
        graph.replay()?;
        let end = stream.record()?;
        replays.push(start.elapsed_seconds(&end)? / m.layers as f64);
    }
    cost.replay_seconds = Some(median(&mut replays));
    Ok(cost)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
