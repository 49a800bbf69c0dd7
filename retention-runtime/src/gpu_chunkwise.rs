//! Which chunkwise kernel serves a problem — the one-pass spec, and the two-phase plan when
//! few (row, head) pairs would leave the GPU idle — used by the device ops and the autotune
//! candidates; plus its host-buffer launch description for kernel timing.

use kernel_gen::emu::{Launch, Param};
use kernel_gen::{
    Arch, KernelOp, KernelSpec, TwoPhasePlan, launch_geometry, param_names, prefer_two_phase,
    two_phase_plan,
};
use retention_core::{Dtype, Element, Gammas, HostTensor, Result, RetentionError, RetentionShape};

use crate::gpu::sequence_param;
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
