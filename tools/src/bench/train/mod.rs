//! `retention bench --suite train`: training — on the CPU the chunkwise forward that saves its
//! f32 chunk states plus the backward from them, timed apart, with GFLOP/s counted from the
//! products (`point`), the measured peak heap bytes (`alloc`), and the gemm crate's f32
//! GFLOP/s measured in the same run as the yardstick; on CUDA the device-resident forward and
//! GPU backward through the public device API (`device_point`), measured peak pool bytes. Shapes: the paper's heads (`--model`,
//! K = 256, V = 512, batch 1) and fla's benchmark shape (B = 4, H = 8, K = V = 256), or the
//! one `--heads/--dk/--dv` names (batch 1); T ∈ {2k, 4k, 8k, 16k} (`--quick`: 2k).
//!
//! The emulated device is refused: it would run these sizes instruction by instruction; its
//! per-kernel predictions are `retention verify` and the other suites'.

mod alloc;
mod device_point;
mod point;

use std::fmt::Write as _;
use std::time::Duration;

use half::{bf16, f16};
use serde::Serialize;

use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::host_info;
use crate::output_file::{check_writable, write_atomic};
use crate::timing::RepeatPlan;
use retention_runtime::Device;
use retention_runtime::kernel_timing::KernelTimer;

use super::BenchArgs;
use super::limits::{self, LimitSizes};
use super::model::memory_limit;
use super::report::Limits;
use point::{TrainRow, TrainShape};

/// The version of this layout.
pub const SCHEMA_VERSION: u32 = 1;

/// The train suite's report (`tools/docs/bench-json.md`, "train suite report").
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Always `train`.
    pub suite: &'static str,
    /// `retention <version>`.
    pub tool: String,
    /// The device measured.
    pub device: String,
    /// Input dtype.
    pub dtype: &'static str,
    /// Copy bandwidth and gemm peak measured in this run.
    pub limits: Limits,
    /// One per measured point.
    pub rows: Vec<TrainRow>,
    /// How the numbers were obtained; skipped points.
    pub notes: Vec<String>,
}

/// The shapes the flags select.
fn shapes(args: &BenchArgs) -> Vec<TrainShape> {
    let m = args.model.shape();
    if m.name == "custom" {
        return vec![TrainShape {
            name: "custom",
            batch: 1,
            heads: m.heads,
            dk: m.dk,
            dv: m.dv,
        }];
    }
    let name = match m.name.as_str() {
        "2.7b" => "2.7b",
        "6.7b" => "6.7b",
        _ => "1.3b",
    };
    vec![
        TrainShape {
            name,
            batch: 1,
            heads: m.heads,
            dk: m.dk,
            dv: m.dv,
        },
        TrainShape {
            name: "fla",
            batch: 4,
            heads: 8,
            dk: 256,
            dv: 256,
        },
    ]
}

/// Run the train suite.
///
/// # Errors
/// The emulated device ([`CliError::NotSupported`]); an output that cannot be written
/// (checked before measuring); kernel errors.
pub fn execute(args: &BenchArgs) -> Result<(), CliError> {
    let device = args.device.open()?;
    if let Device::Emulated(_) = device {
        return Err(CliError::NotSupported {
            what: format!("`bench --suite train` on {device}"),
            hint: ": the emulator runs these sizes instruction by instruction; run it with \
                   --device cpu or cuda (the emulator's per-kernel predictions: retention \
                   verify, bench --suite chunkwise)"
                .into(),
        });
    }
    let on_gpu = device != Device::Cpu;
    for path in [&args.json, &args.markdown].into_iter().flatten() {
        check_writable(path)?;
    }
    let (tokens, limit_sizes, plan): (&[usize], _, _) = if args.quick {
        (&[2048], LimitSizes::QUICK, plan(2, 3, 200))
    } else {
        (
            &[2048, 4096, 8192, 16384],
            LimitSizes::FULL,
            plan(3, 10, 1500),
        )
    };
    let limits = if on_gpu {
        let timer = KernelTimer::new(&device, 20)?;
        Limits {
            copy_gbps: timer.copy_gbps(limit_sizes.copy_floats)?,
            gemm_gflops: None,
            predicted: false,
            gpu_model: None,
        }
    } else {
        limits::measure(limit_sizes)
    };
    let (budget, budget_note) = match args.memory_limit {
        Some(b) => (b, format!("memory limit: {b} bytes (--memory-limit)")),
        None => memory_limit::default_limit(),
    };
    let dtype = args.dtype.name();
    let elem = args.dtype.dtype().size_bytes();
    let mut rows = Vec::new();
    let mut notes = if on_gpu { gpu_notes() } else { cpu_notes() };
    notes.push(budget_note);
    for shape in shapes(args) {
        for &t in tokens {
            if shape.estimate_bytes(t, elem) > budget {
                notes.push(format!(
                    "skipped {} T={t}: needs about {} bytes, over the memory limit",
                    shape.name,
                    shape.estimate_bytes(t, elem)
                ));
                continue;
            }
            rows.push(if on_gpu {
                let x = (dtype, args.dtype.dtype());
                match args.dtype {
                    DtypeArg::F32 => device_point::measure::<f32>(&device, &shape, t, x, plan)?,
                    DtypeArg::F16 => device_point::measure::<f16>(&device, &shape, t, x, plan)?,
                    DtypeArg::Bf16 => device_point::measure::<bf16>(&device, &shape, t, x, plan)?,
                }
            } else {
                let x = (plan, limits.gemm_gflops);
                match args.dtype {
                    DtypeArg::F32 => point::measure::<f32>(&shape, t, dtype, x)?,
                    DtypeArg::F16 => point::measure::<f16>(&shape, t, dtype, x)?,
                    DtypeArg::Bf16 => point::measure::<bf16>(&shape, t, dtype, x)?,
                }
            });
        }
    }
    let report = TrainReport {
        schema: SCHEMA_VERSION,
        suite: "train",
        tool: format!("retention {}", env!("CARGO_PKG_VERSION")),
        device: if on_gpu {
            device.name()
        } else {
            format!("{device} ({})", host_info::describe_cpu())
        },
        dtype,
        limits,
        rows,
        notes,
    };
    emit(args, &report)
}

/// How the CPU rows were measured.
fn cpu_notes() -> Vec<String> {
    vec![
        "seconds: median wall time of Retention::chunkwise_for_training (the chunkwise \
         forward, C = 64, saving the f32 state entering every chunk) plus that of \
         Retention::chunkwise_backward_saved (dq, dk, dv, dh0 and d log γ from them), fast \
         CPU kernels"
            .to_string(),
        "flops per (row, head, token), counted from the products: forward 2C(K+V) + 4KV, \
         backward 2C(3K+2V) + 8KV (nine products per chunk); element-wise work not counted"
            .to_string(),
        "peak_bytes: measured by the tool's counting global allocator — the high-water mark of \
         heap bytes in use during one forward + backward above what was in use before, \
         inputs q, k, v, do, outputs, saved states, gradients and kernel workspace included"
            .to_string(),
    ]
}

/// How the GPU rows were measured.
fn gpu_notes() -> Vec<String> {
    vec![
        "seconds: median wall time, enqueue to Stream::synchronize, of Retention::chunkwise_into \
         (the chunkwise forward, C = 64, on device tensors) and of \
         Retention::chunkwise_backward_into (dq, dk, dv, dh0 and d log γ; the GPU backward \
         recomputes the chunk states on chip, so the forward saves nothing)"
            .to_string(),
        "flops per (row, head, token): the algorithmic count of the CPU rows, forward 2C(K+V) \
         + 4KV, backward 2C(3K+2V) + 8KV; the GPU kernels' recomputation of states is not \
         counted"
            .to_string(),
        "peak_bytes: measured high-water marks of the memory pool holding inputs, outputs and \
         gradients plus the runtime's pool (kernel workspaces)"
            .to_string(),
    ]
}

fn plan(min_runs: usize, max_runs: usize, budget_ms: u64) -> RepeatPlan {
    RepeatPlan {
        min_runs,
        max_runs,
        budget: Duration::from_millis(budget_ms),
    }
}

/// The table, one line per point.
fn render(r: &TrainReport) -> String {
    let yardstick = match r.limits.gemm_gflops {
        Some(g) => format!("gemm f32 {g:.1} GFLOP/s measured in this run"),
        None => format!(
            "device copy {:.0} GB/s measured in this run",
            r.limits.copy_gbps
        ),
    };
    let mut s = format!(
        "retention bench --suite train on {}; inputs {}, f32 states and accumulators; \
         {yardstick}\n",
        r.device, r.dtype,
    );
    s.push_str(
        "shape     B   H    K    V      T   forward  backward     total  GFLOP/s  % gemm   peak MiB  states MiB\n",
    );
    for x in &r.rows {
        let _ = writeln!(
            s,
            "{:<6} {:>4} {:>3} {:>4} {:>4} {:>6} {:>9} {:>9} {:>9} {:>8.1} {:>7} {:>10.1} {:>11.1}",
            x.shape,
            x.batch,
            x.heads,
            x.dk,
            x.dv,
            x.tokens,
            super::duration(x.forward_seconds),
            super::duration(x.backward_seconds),
            super::duration(x.seconds),
            x.gflops,
            x.gemm_fraction
                .map_or_else(|| "-".to_string(), |f| format!("{:.0}%", f * 100.0)),
            x.peak_bytes as f64 / (1 << 20) as f64,
            x.saved_state_bytes as f64 / (1 << 20) as f64,
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// Print the table and write the requested files.
fn emit(args: &BenchArgs, report: &TrainReport) -> Result<(), CliError> {
    let text = render(report);
    print!("{text}");
    if let Some(path) = &args.json {
        let json =
            serde_json::to_string_pretty(report).map_err(|e| CliError::write_output(path, &e))?;
        write_atomic(path, json.as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.markdown {
        write_atomic(path, format!("```\n{text}```\n").as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
