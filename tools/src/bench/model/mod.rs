//! `retention bench --suite model`: the paper's serving comparison on whole models — a
//! RetNet (1.3B, 2.7B or 6.7B, seeded random weights) against the Transformer of the same
//! width, depth and parameter count — decode steps of every layer with real GEMMs (the `gemm`
//! crate), memory from measured high-water marks, throughput and latency against batch up to
//! the memory limit, and the Figure-1 ratios as the summary.
//!
//! Layout: `net/` is the model (no command-line types; tests include it), `grid` what is
//! swept, `point` one measurement, `sweep` one architecture's sweeps, `summary` the ratios,
//! `report` the JSON, `text` the table, `chart` and `plot` the SVGs.
//!
//! Devices: the full sweeps on the CPU. On CUDA (`cuda`) the step is device-resident end to
//! end (`net::DeviceNet`: cuBLAS GEMMs and the runtime's layer, retention and attention
//! kernels on one stream) over a fixed grid of points, measured (no GPU: the device does not
//! open, a typed error). The emulated device predicts the retention and attention kernels
//! only (`emulated`), labelled so; `DeviceNet` runs there too, in the tests, but the
//! emulator has no predicted time for the GEMMs.

mod batch_limit;
pub mod chart;
mod cuda;
mod emulated;
mod grid;
pub mod memory_limit;
pub mod net;
mod plot;
mod point;
mod report;
mod summary;
mod sweep;
mod text;

use half::f16;

use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::host_info;
use crate::output_file::{check_writable, write_atomic};
use crate::progress;
use retention_runtime::Device;

use super::BenchArgs;
use super::limits::{self, LimitSizes};
use grid::{ModelGrid, SUMMARY_CONTEXT};
use net::{NetConfig, NetElement};
use report::{ModelReport, SCHEMA_VERSION};

/// Seed of every model's weights and inputs.
const SEED: u64 = 17;

/// Run the model suite.
///
/// # Errors
/// A model the flags cannot build; device errors;
/// an output that cannot be written (checked before measuring); kernel errors.
pub fn execute(args: &BenchArgs) -> Result<(), CliError> {
    let device = args.device.open()?;
    let shape = args.model.shape();
    let cfg = if shape.name == "custom" {
        NetConfig::custom(shape.heads, shape.dk, shape.dv, shape.layers)
    } else {
        NetConfig::paper(&shape.name)
    }
    .map_err(|e| CliError::BadFlag(e.to_string()))?;
    for path in [&args.json, &args.markdown].into_iter().flatten() {
        check_writable(path)?;
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).map_err(|e| CliError::write_output(dir, &e))?;
        check_writable(&dir.join(plot::FILES[0]))?;
    }
    if let Device::Emulated(_) = device {
        let report = emulated::collect(&device, &cfg, args.dtype)?;
        return emit(args, &report);
    }
    if let Device::Cuda(_) = device {
        let report = match args.dtype {
            DtypeArg::F32 => cuda::collect::<f32>(&device, &cfg, args.dtype, args.quick, SEED)?,
            _ => cuda::collect::<f16>(&device, &cfg, args.dtype, args.quick, SEED)?,
        };
        return emit(args, &report);
    }
    let grid = if args.quick {
        ModelGrid::quick()
    } else {
        ModelGrid::full()
    };
    let (limit, limit_note) = match args.memory_limit {
        Some(l) => (l, format!("memory limit: {l} bytes (--memory-limit)")),
        None => memory_limit::default_limit(),
    };
    let mut notes = vec![limit_note];
    let report = match args.dtype {
        DtypeArg::F32 => collect::<f32>(&cfg, &grid, limit, notes)?,
        DtypeArg::F16 => collect::<f16>(&cfg, &grid, limit, notes)?,
        DtypeArg::Bf16 => {
            notes = vec![
                notes.remove(0),
                "--dtype bf16: the gemm crate multiplies f32 and f16 but not bf16, so weights, \
                 activations and KV cache are f16 (the same bytes as bf16)"
                    .into(),
            ];
            collect::<f16>(&cfg, &grid, limit, notes)?
        }
    };
    emit(args, &report)
}

/// Measure both architectures and summarise.
fn collect<T: NetElement>(
    cfg: &NetConfig,
    grid: &ModelGrid,
    limit: u64,
    mut notes: Vec<String>,
) -> Result<ModelReport, CliError> {
    let bar = progress::bar(1, "limits");
    bar.set_message("copy bandwidth and gemm");
    let limits = limits::measure(LimitSizes::QUICK);
    bar.finish_and_clear();
    let twin = cfg.transformer_twin();
    let bar = progress::bar(2 * grid.points(), "model");
    let mut models = Vec::new();
    let mut rows = Vec::new();
    for c in [cfg, &twin] {
        let run = sweep::run::<T>(c, grid, limit, SEED, &bar)?;
        models.push(run.info);
        rows.extend(run.rows);
        notes.extend(run.skipped);
    }
    bar.finish_and_clear();
    notes.extend(standard_notes());
    let summary = summary::summarise(&cfg.name, SUMMARY_CONTEXT, grid, &rows);
    Ok(ModelReport {
        schema: SCHEMA_VERSION,
        suite: "model",
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: format!("{} ({})", Device::Cpu, host_info::describe_cpu()),
        dtype: T::NAME,
        memory_limit_bytes: limit,
        limits,
        models,
        grid: grid.clone(),
        rows,
        summary,
        notes,
    })
}

fn standard_notes() -> Vec<String> {
    [
        "seconds: median wall time of one decode step of the whole model (after the grid's \
         warm-up steps) — every layer's RMSNorm, fused projection, retention (StatePool::step) or \
         attention (retention_kernels::cpu::attention_decode), gated epilogue, output \
         projection, GELU FFN and residuals; GEMMs through the gemm crate on every thread",
        "memory: high-water marks, measured — every weight, KV-cache and activation tensor is \
         allocated through a counting ledger (its allocated bytes), RetNet's state is the \
         StatePool's MemoryPool high-water mark; kernel outputs count as transient activations",
        "a point does not fit when an allocation would pass the memory limit: the batch sweep \
         stops there for that architecture and context (fits: false)",
        "Transformer: heads of 128, FFN 4d — the RetNet's parameter count; its cache holds \
         `context` tokens including the new one, the earlier ones seeded random",
        "both models leave out the embedding, the LM head and positional rotation (xPos/RoPE)",
        "prefill: time to first token of one prompt through the whole model, timed once — \
         RetNet chunkwise through StatePool::prefill, the Transformer with causal softmax \
         attention (retention_kernels::cpu::attention_prefill) writing its KV cache",
        "batch limit: after the grid's batches, each architecture's exact largest batch at \
         each batch context is found by running batches (a linear fit of the measured memory \
         picks the first guess, bisection makes it exact): the largest that fitted and the \
         one above it that did not are both rows",
        "the ratios are this CPU's, under its memory limit (--device cuda runs the \
         device-resident step on the GPU over a fixed grid)",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// Print the table; write the requested files.
fn emit(args: &BenchArgs, report: &ModelReport) -> Result<(), CliError> {
    print!("{}", text::render(report, false));
    if let Some(path) = &args.json {
        let json = report
            .to_json()
            .map_err(|e| CliError::write_output(path, &e))?;
        write_atomic(path, json.as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.markdown {
        write_atomic(path, text::render(report, true).as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        for f in plot::write(report, dir)? {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}
