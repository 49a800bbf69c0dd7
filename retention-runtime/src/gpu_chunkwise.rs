//! The chunkwise forward on a GPU-like device: the catalog's chunkwise kernel (tensor cores
//! for f16/bf16, FMA for f32) with the argument list its spec names, run by the emulator or a
//! CUDA device.

use kernel_gen::emu::{Launch, Param};
use kernel_gen::{
    Arch, KernelOp, KernelSpec, TwoPhasePlan, launch_geometry, param_names, prefer_two_phase,
    two_phase_plan,
};
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::gpu::{Gpu, StateRef, param_index, sequence_param};
use crate::gpu_decode::gamma_set;

/// The chunkwise spec for this problem, when the catalog's generator serves it (K, V, chunk
/// and dtype it was built for); `None` otherwise.
pub(crate) fn chunkwise_spec(
    gammas: &Gammas,
    shape: &RetentionShape,
    chunk: usize,
    dtype: Dtype,
    arch: Arch,
) -> Option<KernelSpec> {
    let chunk = u32::try_from(chunk).ok()?;
    let spec = KernelSpec::chunkwise(
        shape.dk as u32,
        shape.dv as u32,
        chunk,
        gamma_set(gammas),
        dtype,
        arch,
    );
    spec.validate().ok().map(|()| spec)
}

/// Whether a chunkwise call may split the sequence into two phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TwoPhaseMode {
    /// When [`prefer_two_phase`] says the split pays (few (row, head) pairs, long T).
    Heuristic,
    /// Never: the one-pass kernel (the autotuner found it faster here).
    Off,
}

/// Run `spec` on `gpu` over q, k `[B,T,H,K]`, v `[B,T,H,V]` with optional `h0` `[B,H,K,V]`
/// f32, writing H_T `[B,H,K,V]` into `ht`. Returns o `[B,T,H,V]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunkwise<T: Element>(
    gpu: &Gpu,
    mode: TwoPhaseMode,
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    h0: Option<StateRef<'_>>,
    ht: StateRef<'_>,
) -> Result<HostTensor<T>> {
    if let Some(plan) = two_phase(spec, shape, gpu.arch()).filter(|_| mode != TwoPhaseMode::Off) {
        return two_phase_chunkwise(gpu, &plan, shape, gammas, scale, (q, k, v), h0, ht);
    }
    let mut launch = chunkwise_launch(spec, shape, gammas, scale, (q, k, v))?;
    let at = |name: &str| param_index(spec, name);
    let mut states = vec![(at("p_ht")?, ht)];
    if let Some(h0) = h0 {
        states.push((at("p_h0")?, h0));
    }
    gpu.run(spec, &mut launch, states)?;
    let o = launch
        .buffer(at("p_o")?)
        .ok_or_else(|| RetentionError::KernelLoad("no output buffer".into()))?;
    let values: Vec<T> = crate::gpu_decode::widen(spec.dtype, o);
    HostTensor::new(shape.vo_shape(), values)
}

/// The launch description of `spec` over q, k, v; `p_h0` and `p_ht` are null placeholders
/// for the caller to bind (a null H0 means zero).
pub(crate) fn chunkwise_launch<T: Element>(
    spec: &KernelSpec,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
) -> Result<Launch> {
    let s = shape;
    let geometry =
        launch_geometry(spec, s.batch as u32, s.heads as u32).map_err(RetentionError::from)?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in param_names(spec) {
        let value = match (
            sequence_param(name, spec, s, gammas, scale, (q, k, v)),
            name,
        ) {
            (Some(value), _) => value,
            // Bound by `Gpu::run` (a null H0 when there is none); the two-phase workspace
            // and segment length are bound by the two-phase path.
            (None, "p_h0" | "p_ht" | "p_states" | "p_segment_len") => Param::U64(0),
            (None, other) => {
                return Err(RetentionError::KernelLoad(format!(
                    "{}: the runtime cannot fill parameter `{other}`",
                    spec.entry()
                )));
            }
        };
        launch = launch.arg(value);
    }
    Ok(launch)
}

/// SMs of the GPU the arch's timings describe (A100: 108, H100 SXM: 132): what the two-phase
/// heuristic fills.
fn sm_count(arch: Arch) -> u32 {
    match arch {
        Arch::Sm80 => 108,
        Arch::Sm90 => 132,
    }
}

/// The two-phase plan for a dense chunkwise `spec` over `shape`, when few (row, head) pairs
/// leave the GPU idle and the sequence is long enough to split ([`prefer_two_phase`]) and the
/// catalog's generators serve both phases.
pub(crate) fn two_phase(
    spec: &KernelSpec,
    shape: &RetentionShape,
    arch: Arch,
) -> Option<TwoPhasePlan> {
    if spec.op != KernelOp::Chunkwise {
        return None;
    }
    let (b, h, t) = (
        u32::try_from(shape.batch).ok()?,
        u32::try_from(shape.heads).ok()?,
        u32::try_from(shape.seq_len).ok()?,
    );
    // The one-pass kernel already runs a CTA per V-slice of each (row, head).
    let size = kernel_gen::LaunchSize {
        rows: b,
        heads: h,
        tokens: t,
    };
    let slices = kernel_gen::plan(spec, size).ok()?.geometry.grid[2];
    let segment_len = prefer_two_phase(b, h * slices, t, spec.chunk?, sm_count(arch))?;
    let segmented = KernelSpec {
        op: KernelOp::ChunkwiseSegmented,
        ..*spec
    };
    let plan = two_phase_plan(&segmented, b, h, t, segment_len).ok()?;
    (plan.phase1.is_some()
        && plan.states_spec.validate().is_ok()
        && plan.segmented_spec.validate().is_ok())
    .then_some(plan)
}

/// The chunkwise forward in two phases: `chunk_states` writes each segment's local state
/// into an f32 workspace, then `chunkwise_segmented` folds them into each segment's initial
/// state and runs the chunk loop per segment. The workspace stays in the device's memory.
#[allow(clippy::too_many_arguments)]
fn two_phase_chunkwise<T: Element>(
    gpu: &Gpu,
    plan: &TwoPhasePlan,
    shape: &RetentionShape,
    gammas: &Gammas,
    scale: f32,
    (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
    h0: Option<StateRef<'_>>,
    ht: StateRef<'_>,
) -> Result<HostTensor<T>> {
    let (phase1, segmented) = (plan.states_spec, plan.segmented_spec);
    let Some(g1) = plan.phase1 else {
        return Err(RetentionError::KernelLoad(
            "a two-phase plan without phase 1".into(),
        ));
    };
    let mut workspace = Workspace::new(gpu, plan.workspace_elems.max(1))?;
    // Phase 1: k, v → local segment states.
    let mut launch = chunkwise_launch(&phase1, shape, gammas, scale, (q, k, v))?;
    launch.grid = g1.grid;
    launch.block = g1.block;
    launch.dynamic_shared_bytes = g1.dynamic_smem_bytes;
    launch.params[param_index(&phase1, "p_segment_len")?] = Param::U32(plan.segment_len);
    gpu.run(
        &phase1,
        &mut launch,
        vec![(param_index(&phase1, "p_states")?, workspace.state_ref())],
    )?;
    // Phase 2: fold, then the chunk loop of every segment.
    let mut launch = chunkwise_launch(&segmented, shape, gammas, scale, (q, k, v))?;
    let g2 = plan.phase2;
    launch.grid = g2.grid;
    launch.block = g2.block;
    launch.dynamic_shared_bytes = g2.dynamic_smem_bytes;
    launch.params[param_index(&segmented, "p_segment_len")?] = Param::U32(plan.segment_len);
    let mut states = vec![
        (param_index(&segmented, "p_ht")?, ht),
        (param_index(&segmented, "p_states")?, workspace.state_ref()),
    ];
    if let Some(h0) = h0 {
        states.push((param_index(&segmented, "p_h0")?, h0));
    }
    gpu.run(&segmented, &mut launch, states)?;
    let o = launch
        .buffer(param_index(&segmented, "p_o")?)
        .ok_or_else(|| RetentionError::KernelLoad("no output buffer".into()))?;
    let values: Vec<T> = crate::gpu_decode::widen(segmented.dtype, o);
    HostTensor::new(shape.vo_shape(), values)
}

/// The two-phase workspace in the memory the device's kernels read.
enum Workspace {
    Host(Vec<f32>),
    Device(crate::cuda::DeviceBuffer<f32>),
}

impl Workspace {
    fn new(gpu: &Gpu, elems: usize) -> Result<Self> {
        Ok(match gpu {
            Gpu::Emulated(_) => Workspace::Host(vec![0.0; elems]),
            Gpu::Cuda(target) => Workspace::Device(target.stream().alloc_zeros::<f32>(elems)?),
        })
    }

    fn state_ref(&mut self) -> StateRef<'_> {
        match self {
            Workspace::Host(v) => StateRef::Host(v),
            Workspace::Device(b) => StateRef::Device(b),
        }
    }
}
