//! What one `autotune` run tunes: the CPU chunkwise kernel's chunk size (wall clock), or the
//! catalog's chunkwise variants in the emulator (predicted time) — its cache key, its
//! candidates and how it times them.

use half::{bf16, f16};
use kernel_gen::{Arch, KernelSpec};
use retention_core::Dtype;

use crate::device_arg::DeviceArg;
use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use retention_runtime::Device;
use retention_runtime::autotune_cache::{emulated_hardware, gpu_chunkwise_key};
use retention_runtime::cuda_target::CudaTarget;

use super::cache::{CandidateTiming, ShapeBucket, TuneKey};
use super::sweep::{self, CHUNK_CANDIDATES};
use super::{AutotuneArgs, cpu_chunkwise_key, emulated};

/// A tuning job.
pub enum Tuner {
    /// The CPU chunkwise kernel over [`CHUNK_CANDIDATES`].
    Cpu {
        /// The shape bucket timed.
        bucket: ShapeBucket,
        /// Input dtype.
        dtype: DtypeArg,
        /// Fewer repetitions.
        quick: bool,
    },
    /// Catalog chunkwise variants on a CUDA device, timed with device events after each is
    /// held to the f64 reference on the GPU.
    Cuda {
        /// The shape bucket timed (with the model's own head count).
        bucket: ShapeBucket,
        /// The model's heads.
        heads: usize,
        /// Input dtype.
        dtype: Dtype,
        /// The device.
        target: CudaTarget,
        /// Its ordinal.
        ordinal: usize,
        /// The candidates.
        specs: Vec<KernelSpec>,
        /// Fewer repetitions.
        quick: bool,
    },
    /// Catalog chunkwise variants in the emulator.
    Emulated {
        /// The shape bucket emulated (with the model's own head count).
        bucket: ShapeBucket,
        /// The model's heads.
        heads: usize,
        /// Input dtype.
        dtype: Dtype,
        /// Target architecture.
        arch: Arch,
        /// The candidates.
        specs: Vec<KernelSpec>,
    },
}

fn core_dtype(d: DtypeArg) -> Dtype {
    match d {
        DtypeArg::F32 => Dtype::F32,
        DtypeArg::F16 => Dtype::F16,
        DtypeArg::Bf16 => Dtype::Bf16,
    }
}

impl Tuner {
    /// The job `args` ask for.
    ///
    /// # Errors
    /// A device that cannot be tuned here, `--arch` without `--device emulated`, a shape too
    /// large to bucket or to hold in memory, or one no catalog kernel serves.
    pub fn new(args: &AutotuneArgs) -> Result<Self, CliError> {
        let m = args.model.shape();
        let bucket =
            ShapeBucket::of(args.batch, args.seq_len, m.heads, m.dk, m.dv).ok_or_else(|| {
                CliError::BadFlag(format!("shape too large to bucket: {}", m.describe()))
            })?;
        if args.device == DeviceArg::Emulated {
            let arch = args.arch.unwrap_or(Arch::Sm80);
            let dtype = core_dtype(args.dtype);
            let specs = emulated::candidates(&bucket, (m.heads, m.dk, m.dv), dtype, arch)?;
            return Ok(Tuner::Emulated {
                bucket,
                heads: m.heads,
                dtype,
                arch,
                specs,
            });
        }
        if args.device == DeviceArg::Cuda {
            if args.arch.is_some() {
                return Err(CliError::BadFlag(
                    "--arch is the GPU's own on --device cuda; use it with --device emulated"
                        .into(),
                ));
            }
            let Device::Cuda(ordinal) = args.device.open()? else {
                unreachable!("DeviceArg::Cuda opens a CUDA device")
            };
            let target = CudaTarget::open(ordinal)?;
            let dtype = core_dtype(args.dtype);
            let specs = emulated::candidates(&bucket, (m.heads, m.dk, m.dv), dtype, target.arch())?;
            return Ok(Tuner::Cuda {
                bucket,
                heads: m.heads,
                dtype,
                target,
                ordinal,
                specs,
                quick: args.quick,
            });
        }
        if args.arch.is_some() {
            return Err(CliError::BadFlag(
                "--arch selects catalog kernels: use it with --device emulated".into(),
            ));
        }
        let elem = match args.dtype {
            DtypeArg::F32 => 4,
            DtypeArg::F16 | DtypeArg::Bf16 => 2,
        };
        let needed = sweep::problem_bytes(&bucket, elem);
        if needed > sweep::MEMORY_LIMIT {
            return Err(CliError::BadFlag(format!(
                "the tuning problem needs {} MiB (limit {} MiB); use a smaller --seq-len or \
                 --batch",
                needed >> 20,
                sweep::MEMORY_LIMIT >> 20
            )));
        }
        Ok(Tuner::Cpu {
            bucket,
            dtype: args.dtype,
            quick: args.quick,
        })
    }

    /// The cache key of this job's result.
    pub fn key(&self) -> TuneKey {
        match self {
            Tuner::Cpu { bucket, dtype, .. } => cpu_chunkwise_key(*bucket, *dtype),
            Tuner::Emulated {
                bucket,
                dtype,
                arch,
                specs,
                ..
            } => gpu_chunkwise_key(
                &format!("emulated:{arch}"),
                &emulated_hardware(*arch),
                *arch,
                *bucket,
                *dtype,
                specs,
            ),
            Tuner::Cuda {
                bucket,
                dtype,
                target,
                ordinal,
                specs,
                ..
            } => gpu_chunkwise_key(
                &format!("cuda:{ordinal}"),
                target.name(),
                target.arch(),
                *bucket,
                *dtype,
                specs,
            ),
        }
    }

    /// The candidates, by name.
    pub fn candidate_names(&self) -> Vec<String> {
        match self {
            Tuner::Cpu { .. } => CHUNK_CANDIDATES
                .iter()
                .map(|c| format!("chunk {c}"))
                .collect(),
            Tuner::Emulated { specs, .. } | Tuner::Cuda { specs, .. } => {
                specs.iter().map(KernelSpec::slug).collect()
            }
        }
    }

    /// How the timings are obtained.
    pub fn method(&self) -> &'static str {
        match self {
            Tuner::Cpu { .. } => "cpu wall clock, median of repeated runs",
            Tuner::Emulated { .. } => emulated::METHOD,
            Tuner::Cuda { .. } => {
                "GPU kernel time between device events, median of repeated launches, after \
                 a check against the f64 reference on the GPU"
            }
        }
    }

    /// Time every candidate.
    ///
    /// # Errors
    /// Kernel errors; for the emulator also a candidate off the reference (exit 1).
    pub fn run(&self) -> Result<Vec<CandidateTiming>, CliError> {
        match self {
            Tuner::Cpu {
                bucket,
                dtype,
                quick,
            } => {
                let plan = sweep::plan(*quick);
                match dtype {
                    DtypeArg::F32 => sweep::time_candidates::<f32>(bucket, plan),
                    DtypeArg::F16 => sweep::time_candidates::<f16>(bucket, plan),
                    DtypeArg::Bf16 => sweep::time_candidates::<bf16>(bucket, plan),
                }
            }
            Tuner::Emulated {
                bucket,
                heads,
                specs,
                ..
            } => emulated::time_candidates(specs, bucket, *heads),
            Tuner::Cuda {
                bucket,
                heads,
                target,
                specs,
                quick,
                ..
            } => emulated::time_on_gpu(target, specs, bucket, *heads, *quick),
        }
    }
}
