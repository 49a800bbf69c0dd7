//! `retention run`: compute retention for tensors in a safetensors file, or `--demo`.
//!
//! `--device reference` (the default) computes through the f64 reference (exact) and rounds o
//! once to the input dtype; the final state is written as f32. `--device cpu` runs the same
//! problem through the runtime's fast CPU kernels, `--device emulated` through the runtime on
//! the PTX emulator (the catalog's kernels), `--device cuda` on a GPU; every device accepts
//! packed batches (`cu_seqlens`).
//!
//! `--backward` also runs the form's backward for the upstream gradients in the input file
//! (`do`, `dht`, or the epilogue's `dy` and `g`) and writes dq, dk, dv, dh0 and dlog_gamma
//! (see `backward`): on every device; `emulated`/`cuda` run the runtime's GPU backward
//! kernels (chunkwise and recurrent, dense and varlen; parallel; the epilogue's backward).

mod backward;
mod backward_runtime;
mod demo;
mod forms;
mod gammas_arg;
mod on_device;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use retention_core::{Dtype, HostTensor, validate_scale};
use retention_kernels::reference::RetentionParams;
use safetensors::Dtype as StDtype;

use crate::error::CliError;
use crate::exact_round::encode;
use crate::input_file;
use crate::output_file::{self, OutputTensor};
use forms::{Form, compute};
use gammas_arg::GammasArg;

/// Where the computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The f64 reference oracle on the host, rounded once: exact.
    Reference,
    /// The host CPU through the runtime: the fast CPU kernels.
    Cpu,
    /// The PTX emulator running the catalog's kernels (sm_80) through the runtime.
    Emulated,
    /// CUDA device 0 through the runtime (an error on a machine without one).
    Cuda,
}

/// Flags of `retention run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// safetensors file with q, k [B,T,H,K] and v [B,T,H,V] (f32, f16 or bf16, one dtype),
    /// optionally h0 [B,H,K,V] f32 and cu_seqlens [N+1] i64/i32 (then B = 1, h0 [N,H,K,V]).
    #[arg(long, value_name = "FILE", required_unless_present = "demo")]
    pub input: Option<PathBuf>,
    /// Where to write o (input dtype) and, except for parallel, ht (f32).
    #[arg(long, value_name = "FILE", required_unless_present = "demo")]
    pub output: Option<PathBuf>,
    /// Which form computes the result.
    #[arg(long, value_enum, required_unless_present = "demo")]
    pub form: Option<Form>,
    /// Chunk size of the chunkwise form (any N ≥ 1; need not divide T).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub chunk: usize,
    /// Per-head decays: `retnet` (γ_h = 1 − 2^(−5−h)) or a list `g1,g2,…` with one γ per head.
    #[arg(long, value_name = "retnet|g1,g2,…", default_value = "retnet")]
    pub gammas: String,
    /// Global index of the first head, for a shard of a tensor-parallel model (retnet only).
    #[arg(long, value_name = "N")]
    pub head_offset: Option<usize>,
    /// Scale applied to q (default K^(-1/2)).
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub scale: Option<f64>,
    /// Device to compute on.
    #[arg(long, value_enum, default_value_t = Device::Reference)]
    pub device: Device,
    /// Also run the backward: read `do` (and `dht`; or `dy` and `g` for the gated epilogue)
    /// from the input and write dq, dk, dv (input dtype), dh0 and dlog_gamma (f32).
    #[arg(long)]
    pub backward: bool,
    /// RMSNorm eps of the gated epilogue whose backward `--backward` runs when the input has
    /// `dy` and `g`.
    #[arg(long, value_name = "X", default_value_t = 1e-6, requires = "backward")]
    pub eps: f64,
    /// Generate a random problem, run every form and print how far they are apart.
    #[arg(long, conflicts_with_all = ["input", "output", "form", "chunk", "gammas", "head_offset", "scale", "backward"])]
    pub demo: bool,
    /// Seed of the demo's random problem.
    #[arg(long, value_name = "S", requires = "demo", default_value_t = 42)]
    pub seed: u64,
}

/// Run the subcommand.
///
/// # Errors
/// Any [`CliError`]; nothing is written unless everything succeeded.
pub fn execute(args: &RunArgs) -> Result<(), CliError> {
    let runtime = match args.device {
        Device::Reference => None,
        Device::Cpu => Some(retention_runtime::Device::Cpu),
        Device::Emulated => Some(on_device::runtime_device(true, kernel_gen::Arch::Sm80)?),
        Device::Cuda => Some(on_device::runtime_device(false, kernel_gen::Arch::Sm80)?),
    };
    if args.demo && runtime.is_some() {
        return Err(CliError::BadFlag(
            "--demo runs on the reference device only".into(),
        ));
    }
    if args.demo {
        return demo::run(args.seed);
    }
    let (Some(input), Some(output), Some(form)) = (&args.input, &args.output, args.form) else {
        return Err(CliError::BadFlag(
            "--input, --output and --form are required without --demo".into(),
        ));
    };
    // Flags first: a typo should not cost reading a large file.
    let gammas_arg = GammasArg::parse(&args.gammas, args.head_offset)?;
    let bytes = std::fs::read(input).map_err(|e| CliError::ReadInput {
        path: input.clone(),
        reason: e.to_string(),
    })?;
    let inputs = input_file::load(&bytes, input)?;
    let upstream = args
        .backward
        .then(|| backward::Upstream::load(&bytes, input, inputs.dtype))
        .transpose()?;
    drop(bytes);
    let shape = inputs.shape();
    let gammas = gammas_arg.resolve(shape.heads)?;
    let scale = validate_scale(args.scale, shape.dk)?;
    let params = RetentionParams::new(gammas, Some(scale));
    if let Some(up) = &upstream {
        let up = (up, args.eps);
        let result = match &runtime {
            None => backward::reference(form, args.chunk, &inputs, &params, up)?,
            Some(device) => {
                backward_runtime::compute(device, form, args.chunk, &inputs, &params, up)?
            }
        };
        let mut metadata = provenance(args, form, &params, scale, input);
        metadata.insert("backward".to_string(), "true".to_string());
        return output_file::write(output, &result.tensors(inputs.dtype), metadata);
    }
    let result = match &runtime {
        None => compute(form, args.chunk, &inputs, &params)?,
        Some(device) => on_device::compute(device, form, args.chunk, &inputs, &params)?,
    };

    let mut tensors = vec![OutputTensor {
        name: "o",
        dtype: safetensors_dtype(inputs.dtype),
        shape: result.o.shape().to_vec(),
        bytes: encode(inputs.dtype, result.o.data()),
    }];
    if let Some(ht) = &result.ht {
        tensors.push(OutputTensor {
            name: "ht",
            dtype: StDtype::F32,
            shape: ht.shape().to_vec(),
            bytes: encode(Dtype::F32, ht.data()),
        });
    }
    let metadata = provenance(args, form, &params, scale, input);
    output_file::write(output, &tensors, metadata)
}

/// A tensor to write, rounded once from f64 to `dtype`.
fn output(name: &'static str, dtype: Dtype, t: &HostTensor<f64>) -> OutputTensor {
    OutputTensor {
        name,
        dtype: safetensors_dtype(dtype),
        shape: t.shape().to_vec(),
        bytes: encode(dtype, t.data()),
    }
}

/// How `--device` reads in the output's provenance.
fn device_label(device: Device) -> &'static str {
    match device {
        Device::Reference => "reference (f64, rounded once)",
        Device::Cpu => "cpu (fast CPU kernels)",
        Device::Emulated => "emulated:sm_80 (catalog PTX on the emulator)",
        Device::Cuda => "cuda:0",
    }
}

fn safetensors_dtype(dtype: Dtype) -> StDtype {
    match dtype {
        Dtype::F32 => StDtype::F32,
        Dtype::F16 => StDtype::F16,
        Dtype::Bf16 => StDtype::BF16,
    }
}

/// How the output was made, stored in the file's `__metadata__` so a result explains itself.
fn provenance(
    args: &RunArgs,
    form: Form,
    params: &RetentionParams,
    scale: f64,
    input: &Path,
) -> HashMap<String, String> {
    let gammas: Vec<String> = params
        .gammas
        .as_slice()
        .iter()
        .map(f64::to_string)
        .collect();
    let mut m = HashMap::from([
        (
            "tool".to_string(),
            format!("retention {}", env!("CARGO_PKG_VERSION")),
        ),
        ("form".to_string(), form.name().to_string()),
        ("device".to_string(), device_label(args.device).to_string()),
        ("gammas".to_string(), gammas.join(",")),
        ("scale".to_string(), scale.to_string()),
        ("input".to_string(), input.display().to_string()),
    ]);
    if form == Form::Chunkwise {
        m.insert("chunk".to_string(), args.chunk.to_string());
    }
    m
}
