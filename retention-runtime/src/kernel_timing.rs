//! Kernel-only timing of the catalog's GPU kernels, for `retention bench` and
//! `retention autotune` on GPU-like devices: the launch description the runtime uses for a
//! real call, with seeded random inputs, timed with device events on a CUDA device (inputs
//! uploaded once, the median of repeated launches) or *predicted* by the emulator's time
//! model (`kernel_gen::emu::time_model`) of an A100 (sm_80), H100 (sm_90) or another chosen
//! [`GpuModel`] from one emulated launch.

use half::{bf16, f16};
use kernel_gen::attention_decode_plan as attention_plan;
use kernel_gen::emu::{A100_MODEL, Buffer, GpuModel, H100_MODEL, Launch, Param};
use kernel_gen::{Arch, KernelOp, KernelSpec, TwoPhasePlan, param_names};
use retention_core::SplitMix64;
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::device::Device;
use crate::gpu_chunkwise::{chunkwise_launch, chunkwise_spec, two_phase};
use crate::gpu_decode::{DecodeProblem, decode_launch};
use crate::gpu_parallel::{parallel_launch, parallel_spec};
use crate::kernel_launch::Executor;
use crate::launch_target::{Emulator, LaunchTarget};

/// Runs `$body` with `$t` bound to the element type of `$dtype`.
macro_rules! with_dtype {
    ($dtype:expr, $t:ident, $body:block) => {
        match $dtype {
            Dtype::F32 => {
                type $t = f32;
                $body
            }
            Dtype::F16 => {
                type $t = f16;
                $body
            }
            Dtype::Bf16 => {
                type $t = bf16;
                $body
            }
        }
    };
}

/// One timed kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// The kernel that ran.
    pub spec: KernelSpec,
    /// Seconds per launch: the median measured on a GPU, or the emulator's prediction.
    pub seconds: f64,
    /// True when `seconds` is the emulator's prediction for `spec.arch`, not a measurement.
    pub predicted: bool,
}

/// Times launches on one GPU-like device.
#[derive(Debug, Clone)]
pub struct KernelTimer {
    gpu: Executor,
    reps: usize,
    model: GpuModel,
}

/// The GPU the emulator's time model stands for by default: an A100 for sm_80 PTX, an H100
/// for sm_90.
pub fn default_gpu_model(arch: Arch) -> GpuModel {
    match arch {
        Arch::Sm80 => A100_MODEL,
        Arch::Sm90 => H100_MODEL,
    }
}

impl KernelTimer {
    /// A timer for `device` taking the median of `reps` launches on a GPU (the emulator runs
    /// once: its prediction does not vary).
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] for the CPU (time its kernels directly); a CUDA device
    /// that cannot be opened.
    pub fn new(device: &Device, reps: usize) -> Result<Self> {
        match Executor::of(device)? {
            Some(gpu) => Ok(Self {
                model: default_gpu_model(gpu.arch()),
                gpu,
                reps: reps.max(1),
            }),
            None => Err(RetentionError::Unsupported {
                what: "kernel timer on".into(),
                value: device.name(),
                reason: "the CPU runs no catalog kernels; time its functions directly".into(),
            }),
        }
    }

    /// The architecture whose kernels run.
    pub fn arch(&self) -> Arch {
        self.gpu.arch()
    }

    /// True when times are the emulator's predictions.
    pub fn predicts(&self) -> bool {
        matches!(self.gpu, Executor::Emulator(_))
    }

    /// The same timer predicting for `model` (on the emulator; a GPU still measures itself).
    #[must_use]
    pub fn with_gpu_model(self, model: GpuModel) -> Self {
        Self { model, ..self }
    }

    /// The GPU model predictions are for: `Some` only when [`KernelTimer::predicts`].
    pub fn gpu_model(&self) -> Option<&GpuModel> {
        self.predicts().then_some(&self.model)
    }

    /// One decode step of `rows` sequences with `heads` heads of (dk, dv), each row on its
    /// own state slot, inputs of `dtype`.
    ///
    /// # Errors
    /// A head geometry no decode kernel serves; device errors.
    pub fn decode(
        &self,
        gammas: &Gammas,
        dtype: Dtype,
        rows: usize,
        (heads, dk, dv): (usize, usize, usize),
    ) -> Result<KernelTime> {
        let problem = DecodeProblem {
            arch: self.arch(),
            gammas,
            scale: None,
            heads,
            dk,
            dv,
        };
        let slots: Vec<u32> = (0..rows as u32).collect();
        let (spec, mut launch) = with_dtype!(dtype, T, {
            let q = random::<T>(vec![rows, heads, dk], 1)?;
            let k = random::<T>(vec![rows, heads, dk], 2)?;
            let v = random::<T>(vec![rows, heads, dv], 3)?;
            decode_launch(&problem, &slots, (&q, &k, &v))?
        });
        let state = vec![0.0f32; rows * heads * dk * dv];
        launch.params[3] = Param::Buffer(Buffer::from_f32(&state).output());
        self.time(&spec, &mut launch)
    }

    /// The chunkwise forward over `shape` with chunk `chunk`, no H0, inputs of `dtype`.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when no catalog kernel serves (K, V, chunk, dtype);
    /// device errors.
    pub fn chunkwise(
        &self,
        gammas: &Gammas,
        dtype: Dtype,
        shape: &RetentionShape,
        chunk: usize,
    ) -> Result<KernelTime> {
        let spec = chunkwise_spec(gammas, shape, chunk, dtype, self.arch()).ok_or_else(|| {
            RetentionError::Unsupported {
                what: "chunkwise kernel".into(),
                value: format!("K={} V={} C={chunk} {dtype}", shape.dk, shape.dv),
                reason: "no catalog kernel serves this head geometry and chunk".into(),
            }
        })?;
        if let Some(plan) = two_phase(&spec, shape, self.arch()) {
            return self.two_phase(&plan, gammas, shape);
        }
        self.chunkwise_spec(&spec, gammas, shape)
    }

    /// Both phases of a two-phase chunkwise plan (what the runtime launches for few (row,
    /// head) pairs and long sequences), timed separately and summed.
    fn two_phase(
        &self,
        plan: &TwoPhasePlan,
        gammas: &Gammas,
        shape: &RetentionShape,
    ) -> Result<KernelTime> {
        let s = shape;
        let mut total = KernelTime {
            spec: plan.segmented_spec,
            seconds: 0.0,
            predicted: self.predicts(),
        };
        let workspace = Buffer::from_f32(&vec![0.0; plan.workspace_elems.max(1)]).output();
        let phases = [
            (plan.states_spec, plan.phase1),
            (plan.segmented_spec, Some(plan.phase2)),
        ];
        for (spec, geometry) in phases {
            let Some(g) = geometry else { continue };
            let mut launch = with_dtype!(spec.dtype, T, {
                let q = random::<T>(s.qk_shape().to_vec(), 1)?;
                let k = random::<T>(s.qk_shape().to_vec(), 2)?;
                let v = random::<T>(s.vo_shape().to_vec(), 3)?;
                chunkwise_launch(&spec, s, gammas, (s.dk as f32).powf(-0.5), (&q, &k, &v))?
            });
            launch.grid = g.grid;
            launch.block = g.block;
            launch.dynamic_shared_bytes = g.dynamic_smem_bytes;
            for (i, name) in param_names(&spec).iter().enumerate() {
                launch.params[i] = match *name {
                    "p_states" => Param::Buffer(workspace.clone()),
                    "p_segment_len" => Param::U32(plan.segment_len),
                    "p_ht" => Param::Buffer(
                        Buffer::from_f32(&vec![0.0; s.batch * s.heads * s.dk * s.dv]).output(),
                    ),
                    _ => continue,
                };
            }
            total.seconds += self.time(&spec, &mut launch)?.seconds;
        }
        Ok(total)
    }

    /// The flash-style parallel kernel over `shape`, inputs of `dtype`.
    ///
    /// # Errors
    /// [`RetentionError::Unsupported`] when no catalog kernel serves (K, V, dtype); device
    /// errors.
    pub fn parallel(
        &self,
        gammas: &Gammas,
        dtype: Dtype,
        shape: &RetentionShape,
    ) -> Result<KernelTime> {
        let s = shape;
        let (spec, mut launch) = with_dtype!(dtype, T, {
            let spec = parallel_spec::<T>(self.gpu.arch(), gammas, s)?;
            let q = random::<T>(s.qk_shape().to_vec(), 1)?;
            let k = random::<T>(s.qk_shape().to_vec(), 2)?;
            let v = random::<T>(s.vo_shape().to_vec(), 3)?;
            let launch = parallel_launch(&spec, s, gammas, (s.dk as f32).powf(-0.5), (&q, &k, &v))?;
            (spec, launch)
        });
        self.time(&spec, &mut launch)
    }

    /// The chunkwise kernel `spec` (any catalog variant: the autotuner's candidates) over
    /// `shape`, no H0, seeded inputs of the spec's dtype.
    ///
    /// # Errors
    /// A spec that is not a chunkwise kernel or does not fit `shape`; device errors.
    pub fn chunkwise_spec(
        &self,
        spec: &KernelSpec,
        gammas: &Gammas,
        shape: &RetentionShape,
    ) -> Result<KernelTime> {
        if spec.op == KernelOp::ChunkwiseSegmented {
            // The two-phase forward as the runtime would plan it for this shape.
            let one_pass = KernelSpec {
                op: KernelOp::Chunkwise,
                ..*spec
            };
            let plan = two_phase(&one_pass, shape, self.arch()).ok_or_else(|| {
                RetentionError::Unsupported {
                    what: "two-phase forward for".into(),
                    value: format!("B={} H={} T={}", shape.batch, shape.heads, shape.seq_len),
                    reason: "the runtime would not split this problem".into(),
                }
            })?;
            return self.two_phase(&plan, gammas, shape);
        }
        let spec = *spec;
        let dtype = spec.dtype;
        let s = shape;
        let mut launch = with_dtype!(dtype, T, {
            let q = random::<T>(s.qk_shape().to_vec(), 1)?;
            let k = random::<T>(s.qk_shape().to_vec(), 2)?;
            let v = random::<T>(s.vo_shape().to_vec(), 3)?;
            chunkwise_launch(&spec, s, gammas, (s.dk as f32).powf(-0.5), (&q, &k, &v))?
        });
        let names = param_names(&spec);
        if let Some(i) = names.iter().position(|n| *n == "p_ht") {
            let elems = s.batch * s.heads * s.dk * s.dv;
            launch.params[i] = Param::Buffer(Buffer::from_f32(&vec![0.0; elems]).output());
        }
        self.time(&spec, &mut launch)
    }

    /// The softmax-attention decode baseline: `rows` queries, one per sequence, over a
    /// `context`-token KV cache, inputs of `dtype`. Its split pass and (when the context is
    /// split) combine pass are timed separately and summed.
    ///
    /// # Errors
    /// A head geometry the attention kernels do not serve; device errors.
    pub fn attention_decode(
        &self,
        dtype: Dtype,
        rows: usize,
        context: usize,
        (heads, dk, dv): (usize, usize, usize),
    ) -> Result<KernelTime> {
        let spec = KernelSpec::attention_decode(dk as u32, dv as u32, dtype, self.arch());
        let plan = attention_plan(&spec, rows as u32, heads as u32, context as u32)?;
        let input = |len: usize, seed: u64| -> Result<Buffer> {
            with_dtype!(dtype, T, {
                let t = random::<T>(vec![len], seed)?;
                Ok(Buffer {
                    bytes: t.as_bytes().to_vec(),
                    dtype: crate::gpu_decode::emu_dtype(dtype),
                    output: false,
                })
            })
        };
        let o = Buffer::zeros(crate::gpu_decode::emu_dtype(dtype), rows * heads * dv);
        let partial = Buffer::from_f32(&vec![0.0; plan.partial_floats.max(1) as usize]).output();
        let g = plan.split;
        let mut split = Launch::new(spec.entry(), g.grid, g.block)
            .dynamic_shared(g.dynamic_smem_bytes)
            .arg(Param::Buffer(input(rows * heads * dk, 1)?))
            .arg(Param::Buffer(input(rows * heads * context * dk, 2)?))
            .arg(Param::Buffer(input(rows * heads * context * dv, 3)?))
            .arg(Param::Buffer(o.clone()))
            .arg(Param::Buffer(partial.clone()))
            .arg(Param::U32(context as u32))
            .arg(Param::U32(plan.split_len))
            .arg(Param::F32((dk as f32).powf(-0.5)));
        let mut total = self.time(&spec, &mut split)?;
        if let Some(g) = plan.combine {
            let combine_spec = spec.attention_combine();
            let mut combine = Launch::new(combine_spec.entry(), g.grid, g.block)
                .dynamic_shared(g.dynamic_smem_bytes)
                .arg(Param::Buffer(Buffer {
                    output: false,
                    ..partial
                }))
                .arg(Param::Buffer(o))
                .arg(Param::U32(plan.splits));
            total.seconds += self.time(&combine_spec, &mut combine)?.seconds;
        }
        Ok(total)
    }

    /// Device-to-device copy bandwidth of `floats` f32 (bytes read + written per second,
    /// GB/s; the median of the repetitions), measured with events on a GPU; on the emulator
    /// the modelled GPU's copy bandwidth ([`GpuModel::hbm_copy_bytes_per_second`]).
    ///
    /// # Errors
    /// Device errors, including out of memory for the two buffers.
    pub fn copy_gbps(&self, floats: usize) -> Result<f64> {
        let Executor::Cuda(target) = &self.gpu else {
            return Ok(self.model.hbm_copy_bytes_per_second / 1e9);
        };
        let stream = target.stream();
        let src = stream.alloc_zeros::<f32>(floats)?;
        let mut dst = stream.alloc_zeros::<f32>(floats)?;
        stream.copy_on_device((&src, 0), (&mut dst, 0), floats)?;
        let mut times = Vec::with_capacity(self.reps);
        for _ in 0..self.reps {
            let start = stream.record_event()?;
            stream.copy_on_device((&src, 0), (&mut dst, 0), floats)?;
            let end = stream.record_event()?;
            times.push(f64::from(start.elapsed_ms(&end)?) / 1e3);
        }
        times.sort_by(f64::total_cmp);
        let seconds = times[times.len() / 2].max(1e-9);
        Ok(2.0 * (floats * 4) as f64 / seconds / 1e9)
    }

    /// Times `launch` of `spec`.
    ///
    /// # Errors
    /// Device errors; an emulator fault.
    pub fn time(&self, spec: &KernelSpec, launch: &mut Launch) -> Result<KernelTime> {
        match &self.gpu {
            Executor::Cuda(target) => Ok(KernelTime {
                spec: *spec,
                seconds: target.time(spec, launch, self.reps)?,
                predicted: false,
            }),
            Executor::Emulator(arch) => {
                let report = Emulator(*arch).execute(spec, launch)?;
                Ok(KernelTime {
                    spec: *spec,
                    seconds: report.emulated().map_or(report.seconds(spec.arch), |r| {
                        r.predict(&self.model).seconds
                    }),
                    predicted: report.is_predicted(),
                })
            }
        }
    }
}

/// Seeded values in (-1, 1) as a tensor of `T`.
fn random<T: Element>(shape: Vec<usize>, seed: u64) -> Result<HostTensor<T>> {
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &SplitMix64::new(seed).vec(n))
}
