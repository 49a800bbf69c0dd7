//! `retention verify`: every catalog kernel through ptxas (when found) and the PTX emulator,
//! held to the f64 reference — a table of spec, registers, spills, shared memory, error
//! against the reference and predicted time; exit 1 on any failure.
//!
//! Without `--full` the emulator runs a sample (every spec under a work budget, and another
//! architecture only where its PTX body differs), as `tests/decode_emulated.rs` does; every
//! spec is still emitted, parsed and (with ptxas) assembled.

mod parallel_backward;
mod row;

use clap::Args;
use kernel_gen::emu::Module;
use kernel_gen::{Arch, KernelOp, KernelSpec, catalog, emit_ptx, launch_geometry, ptxas};
use retention_runtime::Device;
use retention_runtime::cuda_target::CudaTarget;
use retention_runtime::launch_target::LaunchTarget;

use crate::error::CliError;
use crate::progress;
use retention_check::{
    EmuCheck, attention as emulate_attention, chunkwise as emulate_chunkwise,
    chunkwise_backward as emulate_backward, decode as emulate_decode, epilogue as emulate_epilogue,
    parallel as emulate_parallel, two_phase as emulate_two_phase, varlen as emulate_varlen,
};
use row::{Row, Status};

/// Emulated state elements a decode spec may cost in a sampled run.
const DECODE_BUDGET: usize = 800_000;
/// Emulated rows × heads × tokens × K × V a chunkwise spec may cost in a sampled run.
const CHUNKWISE_BUDGET: usize = 2_500_000;
/// Emulated rows × heads × tokens × K × V a parallel spec may cost in a sampled run.
const PARALLEL_BUDGET: usize = 2_500_000;
/// Emulated cached elements (rows × heads × tokens × (K + V)) an attention spec may cost in a
/// sampled run.
const ATTENTION_BUDGET: usize = 1_000_000;
/// Emulated elements of o (every case) an epilogue spec may cost in a sampled run.
const EPILOGUE_BUDGET: usize = 100_000;

/// Flags of `retention verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Only this architecture (default: every one in the catalog).
    #[arg(long, value_name = "sm_80|sm_90", value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// Emulate every spec, not a sample (minutes).
    #[arg(long)]
    pub full: bool,
    /// Only specs whose name contains TEXT (e.g. `k64`, `bf16`, `runtime`).
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
    /// Run the reference checks on a real GPU (`cuda`, `cuda:N`) instead of the emulator:
    /// every spec the GPU's architecture can load, with measured kernel times.
    #[arg(long, value_name = "emulated|cuda[:N]", default_value = "emulated")]
    pub device: String,
}

/// `sm_80`/`sm_90` (also `80`, `sm90`) as an [`Arch`], for clap.
pub fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse::<Arch>().map_err(|e| e.to_string())
}

/// PTX text without its `.target`/`.version` lines: what can differ between archs' bodies.
fn body(ptx: &str) -> String {
    ptx.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with(".target") && !l.starts_with(".version")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The emulator checks verify has, one per kernel op it knows how to launch and judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checker {
    /// `retention_check::decode`.
    Decode,
    /// `retention_check::chunkwise`.
    Chunkwise,
    /// `retention_check::varlen`.
    Varlen,
    /// `retention_check::parallel`.
    Parallel,
    /// `retention_check::two_phase` (either phase: the check runs both).
    TwoPhase,
    /// `retention_check::attention` (split pass and combine together, for either op).
    Attention,
    /// `retention_check::chunkwise_backward` (dq, dk and dv together, for any of the three,
    /// dense or varlen).
    ChunkwiseBackward,
    /// `verify::parallel_backward` over `retention_check::parallel_backward` (all four passes
    /// together, for any of the four).
    ParallelBackward,
    /// `retention_check::epilogue` (the forward or the backward kernel).
    Epilogue,
}

impl Checker {
    /// The check for `op`, if there is one. Written as comparisons rather than a match, so a
    /// new op in kernel-gen shows up here as "not emulated" instead of breaking the build.
    fn for_op(op: KernelOp) -> Option<Checker> {
        if op == KernelOp::Decode {
            Some(Checker::Decode)
        } else if op == KernelOp::Chunkwise {
            Some(Checker::Chunkwise)
        } else if op == KernelOp::ChunkwiseVarlen {
            Some(Checker::Varlen)
        } else if op == KernelOp::Parallel {
            Some(Checker::Parallel)
        } else if op == KernelOp::ChunkStates || op == KernelOp::ChunkwiseSegmented {
            Some(Checker::TwoPhase)
        } else if op == KernelOp::AttentionDecode || op == KernelOp::AttentionCombine {
            Some(Checker::Attention)
        } else if emulate_backward::OPS.contains(&op) || emulate_backward::VARLEN_OPS.contains(&op)
        {
            Some(Checker::ChunkwiseBackward)
        } else if matches!(
            op,
            KernelOp::ParallelBackwardDq
                | KernelOp::ParallelBackwardDk
                | KernelOp::ParallelBackwardDv
                | KernelOp::ParallelBackwardDlogGamma
        ) {
            Some(Checker::ParallelBackward)
        } else if op == KernelOp::Epilogue || op == KernelOp::EpilogueBackward {
            Some(Checker::Epilogue)
        } else {
            None
        }
    }

    /// Emulated work of `spec`, and the most a sampled run spends on one spec of this op.
    fn cost_and_budget(self, spec: &KernelSpec) -> (usize, usize) {
        match self {
            Checker::Decode => (emulate_decode::cost(spec), DECODE_BUDGET),
            Checker::Chunkwise => (emulate_chunkwise::cost(spec), CHUNKWISE_BUDGET),
            Checker::Varlen => (emulate_varlen::cost(spec), CHUNKWISE_BUDGET),
            Checker::Parallel => (emulate_parallel::cost(spec), PARALLEL_BUDGET),
            Checker::TwoPhase => (emulate_two_phase::cost(spec), CHUNKWISE_BUDGET),
            Checker::Attention => (emulate_attention::cost(spec), ATTENTION_BUDGET),
            Checker::ChunkwiseBackward => (emulate_backward::cost(spec), CHUNKWISE_BUDGET),
            Checker::ParallelBackward => (parallel_backward::cost(spec), PARALLEL_BUDGET),
            Checker::Epilogue => (emulate_epilogue::cost(spec), EPILOGUE_BUDGET),
        }
    }

    /// (rows, heads) of the emulated launch.
    fn launch_size(self, spec: &KernelSpec) -> (usize, usize) {
        match self {
            Checker::Decode => emulate_decode::problem_size(spec),
            Checker::Varlen => emulate_varlen::problem_size(spec),
            Checker::Chunkwise => {
                let (b, h, _) = emulate_chunkwise::problem_size(spec);
                (b, h)
            }
            Checker::Parallel => {
                let (b, h, _) = emulate_parallel::problem_size(spec);
                (b, h)
            }
            Checker::TwoPhase => {
                let case = emulate_two_phase::problem_size(spec);
                (case.batch, case.heads)
            }
            Checker::Attention => emulate_attention::problem_size(spec),
            Checker::ChunkwiseBackward => {
                let case = emulate_backward::problem_case(spec);
                (case.batch, case.heads)
            }
            Checker::ParallelBackward => {
                let p = parallel_backward::problem(spec);
                (p.batch, p.heads)
            }
            Checker::Epilogue => {
                let case = emulate_epilogue::cases()[0];
                (case.tokens, case.heads)
            }
        }
    }

    /// Emulate `spec` against the reference: the check and why it is off (`None` within
    /// tolerance).
    fn emulate(
        self,
        spec: &KernelSpec,
        module: &dyn LaunchTarget,
        seed: u64,
    ) -> Result<(EmuCheck, Option<String>), String> {
        let check = match self {
            Checker::Decode => emulate_decode::check(spec, module, seed),
            Checker::Chunkwise => emulate_chunkwise::check(spec, module, seed),
            Checker::Varlen => emulate_varlen::check(spec, module, seed),
            Checker::Parallel => emulate_parallel::check(spec, module, seed),
            Checker::TwoPhase => emulate_two_phase::check(spec, module, seed),
            Checker::Attention => emulate_attention::check(spec, module, seed),
            Checker::ChunkwiseBackward => emulate_backward::check(spec, module, seed),
            Checker::Epilogue => emulate_epilogue::check(spec, module, seed),
            Checker::ParallelBackward => return parallel_backward::check(spec, module, seed),
        }?;
        let failure = check.failure(spec.dtype);
        Ok((check, failure))
    }
}

/// Whether a sampled run emulates `spec`: under its op's work budget, and for an architecture
/// after the first selected one only when its body differs from the first one's.
fn sampled(checker: Checker, spec: &KernelSpec, ptx: &str, first_arch: Arch) -> bool {
    let (cost, budget) = checker.cost_and_budget(spec);
    if cost > budget {
        return false;
    }
    if spec.arch == first_arch {
        return true;
    }
    let mut twin = *spec;
    twin.arch = first_arch;
    emit_ptx(&twin).map_or(true, |t| body(&t) != body(ptx))
}

/// Check one spec; never fails as a whole — the row's status carries any failure.
fn check_spec(
    spec: &KernelSpec,
    index: usize,
    ptxas_path: Option<&std::path::Path>,
    full: bool,
    first_arch: Arch,
    gpu: Option<&CudaTarget>,
) -> Row {
    let mut row = Row::new(spec);
    let ptx = match emit_ptx(spec) {
        Ok(p) => p,
        Err(e) => return row.fail(format!("emit: {e}")),
    };
    if let Some(path) = ptxas_path {
        match ptxas::assemble(path, &ptx, spec.arch) {
            Ok(info) => {
                row.ptxas = Some(info);
                if info.spills() {
                    return row.fail(format!(
                        "spills {} B stores / {} B loads",
                        info.spill_store_bytes, info.spill_load_bytes
                    ));
                }
            }
            Err(e) => return row.fail(format!("ptxas: {}", crate::one_line(&e.to_string()))),
        }
    }
    let module = match Module::parse(&ptx) {
        Ok(m) => m,
        Err(e) => return row.fail(format!("emulator parse: {e}")),
    };
    if !module.entries().contains(&spec.entry().as_str()) {
        return row.fail(format!("entry {} missing from the PTX", spec.entry()));
    }
    let Some(checker) = Checker::for_op(spec.op) else {
        row.status = Status::NotEmulated(format!("no reference check for {} yet", spec.op.name()));
        return row;
    };
    let (rows, heads) = checker.launch_size(spec);
    row.dynamic_smem = launch_geometry(spec, rows as u32, heads as u32)
        .ok()
        .map(|g| g.dynamic_smem_bytes);
    if let Some(gpu) = gpu
        && spec.arch > gpu.arch()
    {
        row.status =
            Status::NotEmulated(format!("{} PTX does not load on {}", spec.arch, gpu.arch()));
        return row;
    }
    if gpu.is_none() && !full && !sampled(checker, spec, &ptx, first_arch) {
        row.status = Status::NotEmulated("outside the sample; --full runs it".into());
        return row;
    }
    let target: &dyn LaunchTarget = match gpu {
        Some(g) => g,
        None => &module,
    };
    match checker.emulate(spec, target, 1000 + index as u64) {
        Ok((check, failure)) => {
            row.error = Some(check.o_error.max(check.state_error));
            row.predicted = check.report.as_ref().map(|r| {
                let label = match (r.is_predicted(), spec.arch) {
                    (false, _) => "measured",
                    (true, Arch::Sm80) => "A100",
                    (true, Arch::Sm90) => "H100",
                };
                (label, r.seconds(spec.arch))
            });
            if let Some(why) = failure {
                row.fail(why)
            } else {
                row.status = Status::Passed {
                    tolerance: EmuCheck::o_tolerance(spec.dtype),
                };
                row
            }
        }
        Err(e) => row.fail(e),
    }
}

/// Run the subcommand.
///
/// # Errors
/// [`CliError::BadFlag`] when no spec matches; [`CliError::VerifyFailed`] (exit 1) when any
/// kernel fails.
pub fn execute(args: &VerifyArgs) -> Result<(), CliError> {
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| args.arch.is_none_or(|a| s.arch == a))
        .filter(|s| {
            args.filter
                .as_ref()
                .is_none_or(|f| s.slug().contains(f.as_str()))
        })
        .collect();
    let Some(first_arch) = specs.iter().map(|s| s.arch).min() else {
        return Err(CliError::BadFlag(format!(
            "no catalog kernel matches{}{}",
            args.arch
                .map(|a| format!(" --arch {a}"))
                .unwrap_or_default(),
            args.filter
                .as_ref()
                .map(|f| format!(" --filter {f}"))
                .unwrap_or_default()
        )));
    };
    let gpu = match args.device.as_str() {
        "emulated" => None,
        name => match Device::from_name(name)? {
            Device::Cuda(ordinal) => Some(CudaTarget::open(ordinal)?),
            other => {
                return Err(CliError::BadFlag(format!(
                    "--device {other}: verify runs on `emulated` or a CUDA device"
                )));
            }
        },
    };
    if let Some(g) = &gpu {
        println!(
            "GPU: {} ({}): every spec it can load runs on the device",
            g.name(),
            g.arch()
        );
    }
    let ptxas_path = ptxas::find_ptxas();
    match &ptxas_path {
        Some(p) => println!("ptxas: {}", p.display()),
        None => println!(
            "ptxas: not found (set RETENTION_PTXAS or put ptxas on PATH; \
             scripts/install-ptxas.sh installs it) — registers, spills and static shared \
             memory are not checked"
        ),
    }
    println!(
        "emulator: {} ({} specs)",
        if args.full {
            "every spec"
        } else {
            "a sample (--full runs every spec)"
        },
        specs.len()
    );
    let bar = progress::bar(specs.len(), "verify");
    let rows: Vec<Row> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            bar.set_message(spec.slug());
            let row = check_spec(
                spec,
                i,
                ptxas_path.as_deref(),
                args.full,
                first_arch,
                gpu.as_ref(),
            );
            bar.inc(1);
            row
        })
        .collect();
    bar.finish_and_clear();
    print!("{}", row::render(&rows));

    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Failed(_)))
        .collect();
    let emulated = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Passed { .. }))
        .count();
    println!(
        "{} specs: {} emulated and within tolerance, {} not emulated, {} failed{}",
        rows.len(),
        emulated,
        rows.len() - emulated - failed.len(),
        failed.len(),
        if ptxas_path.is_some() {
            "; all assembled by ptxas"
        } else {
            ""
        }
    );
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(CliError::VerifyFailed(format!(
            "{} of {} kernels failed; first: {} ({})",
            failed.len(),
            rows.len(),
            first.slug,
            first.status.text()
        ))),
    }
}
