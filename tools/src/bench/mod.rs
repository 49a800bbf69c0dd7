//! `retention bench`: decode latency against context and batch, prefill throughput against T
//! and chunk, and retention against the attention KV-cache baseline, with the machine's own
//! copy and GEMM limits measured in the same run. Prints a table; writes JSON (schema 2, see
//! `tools/docs/bench-json.md`), Markdown and SVG plots on request.
//!
//! Retention decode runs through the runtime's `StatePool` (its high-water mark is the state
//! memory figure); attention decode and prefill call the CPU kernels of `retention_kernels::cpu`
//! directly.

mod device_api;
mod gpu_points;
mod grid;
mod limits;
mod model;
mod plot;
mod points;
pub mod report;
mod suites;
mod table;
mod train;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use half::{bf16, f16};

use crate::device_arg::DeviceArg;
use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::host_info;
use crate::model_arg::ModelArgs;
use crate::output_file::{check_writable, write_atomic};
use crate::progress;
use gpu_points::GpuContext;
use grid::Grid;
use points::PointContext;
use report::Limits;
use report::{Report, SCHEMA_VERSION};
use retention_runtime::Device;
use retention_runtime::cuda_target::CudaTarget;
use retention_runtime::kernel_timing::KernelTimer;
use suites::Selection;
use table::Style;
pub use table::duration;

/// Which measurements to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteArg {
    /// Decode latency and tokens/s against context and batch.
    Decode,
    /// Prefill throughput against T and chunk size.
    Prefill,
    /// Retention against the attention KV-cache baseline at 2k, 8k and 32k context.
    Compare,
    /// All three.
    All,
    /// Whole models: RetNet against a Transformer of the same size (memory, throughput and
    /// latency against context and batch; the paper's Figure-1 ratios). Not part of `all`.
    Model,
    /// Training: chunkwise forward + backward time, GFLOP/s and peak memory against T, on the
    /// CPU. Not part of `all`.
    Train,
}

/// The GPU the emulator's time model stands for (`--device emulated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GpuArg {
    /// A100-80GB SXM: sm_80 kernels.
    A100,
    /// H100 SXM5 80GB: sm_90 kernels (the model calibrated against H100 measurements).
    H100,
    /// H200 SXM 141GB: sm_90 kernels, the H100's rates with HBM3e.
    H200,
}

impl GpuArg {
    /// The time model's parameter set.
    pub fn model(self) -> kernel_gen::emu::GpuModel {
        match self {
            GpuArg::A100 => kernel_gen::emu::A100_MODEL,
            GpuArg::H100 => kernel_gen::emu::H100_MODEL,
            GpuArg::H200 => kernel_gen::emu::H200_MODEL,
        }
    }

    /// The architecture whose catalog kernels run on it.
    pub fn arch(self) -> kernel_gen::Arch {
        match self {
            GpuArg::A100 => kernel_gen::Arch::Sm80,
            GpuArg::H100 | GpuArg::H200 => kernel_gen::Arch::Sm90,
        }
    }
}

/// Flags of `retention bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Device to measure.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// The GPU whose time the emulator predicts (`--device emulated` only; default a100).
    #[arg(long, value_enum)]
    pub gpu: Option<GpuArg>,
    /// The model measured.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which suite to run.
    #[arg(long, value_enum, default_value_t = SuiteArg::All)]
    pub suite: SuiteArg,
    /// Input dtype of q, k, v and the KV cache (state is f32).
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    pub dtype: DtypeArg,
    /// A much smaller sweep with fewer repetitions (seconds instead of a minute or two).
    #[arg(long)]
    pub quick: bool,
    /// Write the report as JSON (schema 2) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write SVG plots of latency and memory against context into DIR (created if needed).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Memory a model may use in the model suite (e.g. 6G, 512M; default a quarter of RAM):
    /// weights, state or KV cache and activations; the batch sweep stops where it runs out.
    #[arg(long, value_name = "BYTES", value_parser = model::memory_limit::parse)]
    pub memory_limit: Option<u64>,
}

/// Fail before measuring anything when an output cannot be written.
fn preflight(args: &BenchArgs) -> Result<(), CliError> {
    for path in [&args.json, &args.markdown].into_iter().flatten() {
        check_writable(path)?;
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).map_err(|e| CliError::write_output(dir, &e))?;
        check_writable(&dir.join(plot::FILES[0]))?;
    }
    Ok(())
}

/// Run the subcommand.
///
/// # Errors
/// Any [`CliError`]; outputs are checked before measuring and written atomically.
pub fn execute(args: &BenchArgs) -> Result<(), CliError> {
    let device = match (args.device.open()?, args.gpu) {
        (Device::Emulated(_), Some(gpu)) => Device::Emulated(gpu.arch()),
        (_, Some(_)) => {
            return Err(CliError::BadFlag(
                "--gpu picks the GPU the emulator models: use it with --device emulated".into(),
            ));
        }
        (device, None) => device,
    };
    if args.suite == SuiteArg::Model {
        return model::execute(args);
    }
    if args.suite == SuiteArg::Train {
        return train::execute(args);
    }
    let model = args.model.shape();
    preflight(args)?;
    let grid = match (&device, args.quick) {
        (Device::Emulated(_), _) => Grid::emulated(),
        (Device::Cuda(_), _) => Grid::gpu(args.quick),
        (_, true) => Grid::quick(),
        (_, false) => Grid::full(),
    };
    if device != Device::Cpu {
        return execute_gpu(args, &device, model, &grid, selection(args.suite));
    }
    let selection = selection(args.suite);
    run_cpu(args, &device, model, &grid, selection)
}

/// The suites `suite` selects.
fn selection(suite: SuiteArg) -> Selection {
    match suite {
        SuiteArg::Decode => Selection {
            decode: true,
            prefill: false,
            compare: false,
        },
        SuiteArg::Prefill => Selection {
            decode: false,
            prefill: true,
            compare: false,
        },
        SuiteArg::Compare => Selection {
            decode: false,
            prefill: false,
            compare: true,
        },
        // `Model` and `Train` never get here: `execute` hands them to their suites first.
        SuiteArg::All | SuiteArg::Model | SuiteArg::Train => Selection {
            decode: true,
            prefill: true,
            compare: true,
        },
    }
}

/// The CPU run: the fast CPU kernels, limits of this machine.
fn run_cpu(
    args: &BenchArgs,
    device: &Device,
    model: crate::model_arg::ModelShape,
    grid: &Grid,
    selection: Selection,
) -> Result<(), CliError> {
    let bar = progress::bar(1, "limits");
    bar.set_message("copy bandwidth and gemm");
    let limits = limits::measure(grid.limits);
    bar.finish_and_clear();

    let cx = PointContext {
        model: &model,
        dtype: args.dtype.name(),
        plan: grid.plan,
        memory_budget: grid.memory_budget,
    };
    let collected = match args.dtype {
        DtypeArg::F32 => suites::run::<f32>(&cx, grid, selection)?,
        DtypeArg::F16 => suites::run::<f16>(&cx, grid, selection)?,
        DtypeArg::Bf16 => suites::run::<bf16>(&cx, grid, selection)?,
    };
    if collected.results.is_empty() {
        return Err(CliError::BadFlag(format!(
            "nothing could be measured for {}: {}",
            model.describe(),
            collected
                .notes
                .first()
                .map_or("no point selected", String::as_str)
        )));
    }
    let mut notes = vec![
        "retention decode timed through the runtime's StatePool::step (CPU kernels, in place \
         on the pool's storage), its state memory the pool's high-water mark; attention \
         decode and prefill call retention_kernels::cpu directly"
            .to_string(),
        "% copy: a copy also reads its destination before writing it (write-allocate) while \
         the decode step updates its state in place, so decode can pass 100%"
            .to_string(),
        "seconds: median per call on one layer; tokens/s, state and KV cache: whole model"
            .to_string(),
        "retention decode state does not grow with context: each context is measured, not \
         copied"
            .to_string(),
    ];
    notes.extend(collected.notes);
    let report = Report {
        schema: SCHEMA_VERSION,
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: format!("{device} ({})", host_info::describe_cpu()),
        model,
        limits,
        results: collected.results,
        notes,
    };

    emit(args, &report)
}

/// The GPU run (`--device cuda` or `emulated`): catalog kernels timed by the runtime.
fn execute_gpu(
    args: &BenchArgs,
    device: &Device,
    model: crate::model_arg::ModelShape,
    grid: &Grid,
    selection: Selection,
) -> Result<(), CliError> {
    let mut timer = KernelTimer::new(device, grid.plan.max_runs.min(50))?;
    if let Some(gpu) = args.gpu {
        timer = timer.with_gpu_model(gpu.model());
    }
    let limits = Limits {
        copy_gbps: timer.copy_gbps(grid.limits.copy_floats)?,
        gemm_gflops: timer.gpu_model().map(|m| m.mma_sync_flops() / 1e9),
        predicted: timer.predicts(),
        gpu_model: timer.gpu_model().map(|m| m.name),
    };
    let cx = PointContext {
        model: &model,
        dtype: args.dtype.name(),
        plan: grid.plan,
        memory_budget: grid.memory_budget,
    };
    let g = GpuContext {
        cx: &cx,
        device,
        timer: &timer,
        dtype: args.dtype.dtype(),
    };
    let collected = suites::run_gpu(&g, grid, selection)?;
    if collected.results.is_empty() {
        return Err(CliError::BadFlag(format!(
            "nothing could be measured for {} on {device}: {}",
            model.describe(),
            collected
                .notes
                .first()
                .map_or("no point selected", String::as_str)
        )));
    }
    let mut notes = vec![if timer.predicts() {
        format!(
            "seconds are PREDICTED: one emulated launch of each catalog kernel, timed by the \
             emulator's time model of the {} (launch overhead, occupancy, waves, issue and \
             tensor-core rates, exposed memory latency; calibrated within 1.5x of every H100 \
             measurement in ptx-emu/data/measured_h100.json), not a measurement; limits are \
             that model's copy bandwidth and mma.sync peak",
            timer.gpu_model().map_or("GPU", |m| m.label)
        )
    } else {
        "seconds: kernel time between two device events, the median of repeated launches with \
         inputs already on the GPU; copy_gbps: device-to-device copy timed the same way"
            .to_string()
    }];
    notes.push(
        "retention decode: the catalog decode kernel on one layer's states; state memory is \
         the high-water mark of a StatePool holding the whole model's state on the device"
            .to_string(),
    );
    notes.push(
        "chunkwise: the kernels the runtime launches — the two-phase forward (chunk states, \
         then segments; both timed) when few heads leave the GPU idle, else the one-pass \
         kernel; parallel: the flash-style parallel kernel"
            .to_string(),
    );
    notes.push(
        "seconds: median per call on one layer; tokens/s, state and KV cache: whole model"
            .to_string(),
    );
    let generated = retention_runtime::ModuleCache::global().stats();
    let loaded = retention_runtime::cuda_target::cuda_load_stats();
    notes.push(format!(
        "kernels: {} generated by kernel-gen in {:.2} s{}",
        generated.modules,
        generated.generate_seconds,
        if loaded.kernels > 0 {
            format!(
                "; {} loaded by the CUDA driver (PTX JIT) in {:.2} s",
                loaded.kernels, loaded.load_seconds
            )
        } else {
            String::new()
        }
    ));
    notes.extend(collected.notes);
    let report = Report {
        schema: SCHEMA_VERSION,
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: match device {
            Device::Cuda(ordinal) => format!("{device} ({})", CudaTarget::open(*ordinal)?.name()),
            _ => format!(
                "{device} (PTX emulator; times predicted for an {})",
                timer.gpu_model().map_or("unknown GPU", |m| m.label)
            ),
        },
        model,
        limits,
        results: collected.results,
        notes,
    };
    emit(args, &report)
}

/// Print the table and write the requested files.
fn emit(args: &BenchArgs, report: &Report) -> Result<(), CliError> {
    let report = report.clone();
    print!("{}", table::render(&report, Style::Terminal));
    if let Some(path) = &args.json {
        let json = report
            .to_json()
            .map_err(|e| CliError::write_output(path, &e))?;
        write_atomic(path, json.as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.markdown {
        write_atomic(path, table::render(&report, Style::Markdown).as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        let files = plot::write(&report, dir)?;
        if files.is_empty() {
            println!("no batch-1 decode results to plot (run the decode or compare suite)");
        }
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    Ok(())
}
