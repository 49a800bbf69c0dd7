//! `--device cuda --suite model`: the whole-model decode step device-resident on the GPU
//! ([`super::net::DeviceNet`]: cuBLAS GEMMs, the runtime's RMSNorm, GELU, row-copy,
//! retention decode, epilogue and attention decode kernels on one stream), timed by wall
//! clock around synchronised steps, memory from the device pool's measured `in_use` and
//! high-water mark. Weights are built on the host and uploaded once; the Transformer's KV
//! cache is zero-filled on the device (attention's cost does not depend on its values). A fixed grid of (batch, context) points; the batch sweep to the device's
//! memory limit and the prefill are not run on CUDA yet (the rows and notes say so).

use std::time::Instant;

use retention_runtime::{Device, DeviceTensor};

use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::progress;

use super::super::report::Limits;
use super::grid::ModelGrid;
use super::net::{Arch, DeviceNet, Ledger, NetConfig, NetElement, RetNet, Transformer, fill};
use super::point::cli_error;
use super::report::{ModelInfo, ModelReport, ModelRow, SCHEMA_VERSION, Summary, Sweep};

/// (batch, context) points: quick, then full.
const QUICK: &[(usize, usize)] = &[(1, 2048)];
const FULL: &[(usize, usize)] = &[(1, 2048), (8, 2048), (1, 8192), (8, 8192)];

/// Timed steps per point (after two warm-up steps).
const STEPS: usize = 5;

/// Measure both architectures of `cfg` on `device` (CUDA) in `T`.
///
/// # Errors
/// Device errors, out of device memory, kernels refusing the geometry.
pub fn collect<T: NetElement>(
    device: &Device,
    cfg: &NetConfig,
    dtype: DtypeArg,
    quick: bool,
    seed: u64,
) -> Result<ModelReport, CliError> {
    let points = if quick { QUICK } else { FULL };
    let twin = cfg.transformer_twin();
    let bar = progress::bar(2 * points.len(), "model (cuda)");
    let mut rows = Vec::new();
    for c in [cfg, &twin] {
        for &(batch, context) in points {
            bar.set_message(format!("{} batch {batch} context {context}", c.arch.name()));
            rows.push(point::<T>(device, c, (batch, context), seed)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let grid = ModelGrid {
        contexts: points.iter().map(|p| p.1).collect(),
        batch_contexts: Vec::new(),
        batches: points.iter().map(|p| p.0).collect(),
        prefill_tokens: 0,
        ..ModelGrid::quick()
    };
    Ok(ModelReport {
        schema: SCHEMA_VERSION,
        suite: "model",
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: device.name(),
        dtype: dtype.name(),
        memory_limit_bytes: 0,
        limits: Limits {
            copy_gbps: 0.0,
            gemm_gflops: None,
            predicted: false,
            gpu_model: None,
        },
        models: ModelInfo::configured(cfg),
        grid,
        rows,
        summary: Summary::empty(&cfg.name, 0),
        notes: vec![
            "cuda: seconds are MEASURED — the median wall time of a synchronised decode step of \
             the whole model, device-resident (cuBLAS GEMMs; the runtime's RMSNorm, GELU, \
             row-copy, retention decode + gated epilogue or KV append + attention decode \
             kernels), after two warm-up steps"
                .into(),
            "memory: the device pool's measured bytes — cache (state or KV cache) and weights \
             from its in_use after each was allocated, total its high-water mark"
                .into(),
            "not yet on cuda: the batch sweep to the memory limit, the prefill and the \
             Figure-1 ratios (summary null); a fixed grid of points"
                .into(),
        ],
    })
}

/// One (batch, context) point of `c`.
fn point<T: NetElement>(
    device: &Device,
    c: &NetConfig,
    (batch, context): (usize, usize),
    seed: u64,
) -> Result<ModelRow, CliError> {
    let ledger = Ledger::new(u64::MAX);
    let mut net = match c.arch {
        Arch::Retnet => {
            let mut host = RetNet::<T>::new(c, &ledger, seed).map_err(cli_error)?;
            host.start(batch).map_err(cli_error)?;
            DeviceNet::retnet(device, &host, batch)
        }
        Arch::Transformer => {
            let host = Transformer::<T>::new(c, &ledger, seed).map_err(cli_error)?;
            DeviceNet::transformer_zeroed(device, &host, (batch, context))
        }
    }
    .map_err(cli_error)?;
    let mut x = vec![T::from_f64(0.0); batch * c.d_model];
    fill::uniform(&mut x, fill::derive(seed, 99), 1.0);
    let h = retention_core::HostTensor::new(vec![batch, c.d_model], x)?;
    let stream = net.stream().clone();
    let mut dx = DeviceTensor::upload(net.memory(), &h, &stream)?;
    let mut times = Vec::with_capacity(STEPS);
    for i in 0..STEPS + 2 {
        stream.synchronize()?;
        let start = Instant::now();
        net.step(&mut dx).map_err(cli_error)?;
        stream.synchronize()?;
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let s = times[times.len() / 2];
    let (cache, weights) = net.bytes();
    let mut row = ModelRow::empty(Sweep::Context, c.arch, batch, context, 1);
    row.seconds = Some(s);
    row.tokens_per_s = Some(batch as f64 / s.max(1e-12));
    row.latency_ms = Some(s * 1e3);
    row.weights_bytes = Some(weights);
    row.cache_bytes = Some(cache);
    row.total_bytes = Some(net.memory().stats().high_water as u64);
    row.activation_bytes = row.total_bytes.map(|t| t.saturating_sub(cache + weights));
    Ok(row)
}
