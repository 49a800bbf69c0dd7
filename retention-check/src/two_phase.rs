//! Run the two-phase chunkwise forward in the emulator — phase 1 (`chunk_states`) writes the
//! segments' local states into a workspace, phase 2 (`chunkwise_segmented`) folds them into
//! each segment's initial state and writes o and H_T — and hold o and H_T to the f64
//! reference (`reference::chunkwise` on the dtype-rounded inputs), as
//! [`super::chunkwise`] does for the one-pass kernel.
//!
//! Both launches are sized by `kernel_gen::two_phase_plan` and their arguments filled by the
//! names `kernel_gen::param_names` gives, so the runtime's launch recipe is checked here too.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Param};

use kernel_gen::{GammaSet, KernelOp, KernelSpec, LaunchGeometry, param_names};
use retention_core::{Dtype, Gammas, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::io::{
    EmuCheck, check_heads, emu_dtype, gammas_for, input_buffer, output_values, position,
    state_work, tensor, unwritten_shared_reads,
};

/// Scale applied to q (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.29;

/// One two-phase problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoPhaseCase {
    /// Rows B.
    pub batch: usize,
    /// Heads H (a named gamma set fixes its own).
    pub heads: usize,
    /// Tokens T per row.
    pub t: usize,
    /// L, tokens per segment (a multiple of the chunk).
    pub segment_len: usize,
    /// Whether H0 is given (else `p_h0` = 0).
    pub with_h0: bool,
    /// Whether H_T is asked for (else `p_ht` = 0).
    pub want_ht: bool,
}

/// The problem a spec is checked with by default: one row, the spec's heads (3 for runtime
/// γ), segments of two chunks, and T = two full segments plus a partial one that ends in a
/// partial chunk; H0 given and H_T asked for.
pub fn problem_size(spec: &KernelSpec) -> TwoPhaseCase {
    let heads = check_heads(spec);
    let chunk = spec.chunk.unwrap_or(1) as usize;
    TwoPhaseCase {
        batch: 1,
        heads,
        t: 4 * chunk + 5,
        segment_len: 2 * chunk,
        with_h0: true,
        want_ht: true,
    }
}

/// Emulated work of [`problem_size`] (rows × heads × T × K × V), for sampling decisions.
pub fn cost(spec: &KernelSpec) -> usize {
    let c = problem_size(spec);
    state_work(spec, c.batch, c.heads, c.t)
}

/// The other phase's spec: `chunk_states` ↔ `chunkwise_segmented`.
///
/// # Errors
/// A one-line reason when `spec` is neither phase.
pub fn partner(spec: &KernelSpec) -> Result<KernelSpec, String> {
    let op = match spec.op {
        KernelOp::ChunkStates => KernelOp::ChunkwiseSegmented,
        KernelOp::ChunkwiseSegmented => KernelOp::ChunkStates,
        other => return Err(format!("{} is not a two-phase op", other.name())),
    };
    Ok(KernelSpec { op, ..*spec })
}

/// Run [`problem_size`] for `spec` (either phase; `module` is its PTX, the partner phase is
/// emitted here).
///
/// # Errors
/// A one-line reason: not a two-phase spec, emission, launch planning, an unknown
/// parameter, an emulator error, or a reference failure. Results off the reference are not
/// errors here: see [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    // The partner phase runs on the same target (an emulator module generates other specs'
    // modules on demand; a GPU loads them).
    let other = partner(spec)?;
    let (states, segmented) = if spec.op == KernelOp::ChunkStates {
        ((spec, module), (&other, module))
    } else {
        ((&other, module), (spec, module))
    };
    check_case(states, segmented, problem_size(spec), seed).map(|(check, _)| check)
}

/// The values every launch of one problem shares.
struct Problem {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    h0: Vec<f64>,
    gammas: Gammas,
    case: TwoPhaseCase,
}

impl Problem {
    /// The argument for parameter `name`; `workspace` is phase 1's output (or 0 when empty).
    fn arg(&self, spec: &KernelSpec, name: &str, workspace: &Buffer) -> Result<Param, String> {
        let TwoPhaseCase {
            batch: b,
            heads: h,
            t,
            ..
        } = self.case;
        let (k, v) = (spec.k as usize, spec.v as usize);
        Ok(match name {
            "p_q" => Param::Buffer(input_buffer(spec.dtype, &self.q)),
            "p_k" => Param::Buffer(input_buffer(spec.dtype, &self.k)),
            "p_v" => Param::Buffer(input_buffer(spec.dtype, &self.v)),
            "p_o" => Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), b * t * h * v).output()),
            "p_h0" if self.case.with_h0 => Param::Buffer(Buffer::from_f32(
                &self.h0.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            )),
            "p_ht" if self.case.want_ht => {
                Param::Buffer(Buffer::zeros(EmuDtype::F32, b * h * k * v).output())
            }
            "p_h0" | "p_ht" => Param::U64(0),
            "p_states" if workspace.is_empty() => Param::U64(0),
            "p_states" => Param::Buffer(workspace.clone()),
            "p_t" => Param::U32(t as u32),
            "p_segment_len" => Param::U32(self.case.segment_len as u32),
            "p_scale" => Param::F32(SCALE as f32),
            "p_heads" => Param::U32(h as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(
                &(0..h)
                    .map(|i| self.gammas.log2(i) as f32)
                    .collect::<Vec<_>>(),
            )),
            other => return Err(format!("cannot fill two-phase parameter `{other}`")),
        })
    }

    /// Launch `spec` on `geometry` with every parameter filled.
    fn launch(
        &self,
        spec: &KernelSpec,
        module: &dyn LaunchTarget,
        geometry: LaunchGeometry,
        workspace: &Buffer,
    ) -> Result<(Launch, LaunchReport), String> {
        let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
            .dynamic_shared(geometry.dynamic_smem_bytes);
        for name in param_names(spec) {
            launch = launch.arg(self.arg(spec, name, workspace)?);
        }
        let report = module
            .execute(spec, &mut launch)
            .map_err(|e| format!("{}: {e}", spec.slug()))?;
        Ok((launch, report))
    }
}

/// Run `case` through phase 1 (`states`: spec and module) and phase 2 (`segmented`) and
/// compare with the reference. Returns the check (its report is phase 2's) and phase 1's
/// report (`None` when there is a single segment and phase 1 is not launched).
///
/// # Errors
/// As [`check`].
pub fn check_case(
    (states_spec, states_module): (&KernelSpec, &dyn LaunchTarget),
    (spec, module): (&KernelSpec, &dyn LaunchTarget),
    case: TwoPhaseCase,
    seed: u64,
) -> Result<(EmuCheck, Option<LaunchReport>), String> {
    let chunk = spec
        .chunk
        .ok_or_else(|| format!("{} has no chunk size", spec.slug()))? as usize;
    let h = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => case.heads,
    };
    let case = TwoPhaseCase { heads: h, ..case };
    let (b, t) = (case.batch, case.t);
    let (k, v) = (spec.k as usize, spec.v as usize);
    let gammas = gammas_for(spec.gammas, h)?;
    let params = RetentionParams::new(gammas.clone(), Some(SCALE));
    let mut rng = SplitMix64::new(seed);
    let mut round = |len: usize| {
        rng.vec(len)
            .into_iter()
            .map(|x| spec.dtype.round(x))
            .collect::<Vec<_>>()
    };
    let problem = Problem {
        q: round(b * t * h * k),
        k: round(b * t * h * k),
        v: round(b * t * h * v),
        // f32 state values (the kernel reads f32).
        h0: round(b * h * k * v)
            .into_iter()
            .map(|x| f64::from(x as f32))
            .collect(),
        gammas,
        case,
    };
    let h0_tensor = tensor(vec![b, h, k, v], &problem.h0)?;
    let (want_o, want_ht) = reference::chunkwise(
        &tensor(vec![b, t, h, k], &problem.q)?,
        &tensor(vec![b, t, h, k], &problem.k)?,
        &tensor(vec![b, t, h, v], &problem.v)?,
        &params,
        chunk,
        case.with_h0.then_some(&h0_tensor),
    )
    .map_err(|e| e.to_string())?;

    let plan =
        kernel_gen::two_phase_plan(spec, b as u32, h as u32, t as u32, case.segment_len as u32)
            .map_err(|e| e.to_string())?;
    if plan.states_spec != *states_spec || plan.segmented_spec != *spec {
        return Err(format!(
            "{} and {} are not the two phases of one plan",
            states_spec.slug(),
            spec.slug()
        ));
    }
    let mut workspace = Buffer::zeros(EmuDtype::F32, plan.workspace_elems);
    let phase1 = match plan.phase1 {
        Some(geometry) => {
            let names = param_names(states_spec);
            let at = position(&names, "p_states", states_spec)?;
            let (launch, report) =
                problem.launch(states_spec, states_module, geometry, &workspace)?;
            let written = launch
                .buffer(at)
                .ok_or("the workspace argument is not a buffer")?;
            workspace = Buffer::from_f32(&written.to_f32());
            Some(report)
        }
        None => None,
    };
    let names = param_names(spec);
    let (o_at, ht_at) = (
        position(&names, "p_o", spec)?,
        position(&names, "p_ht", spec)?,
    );
    let (launch, report) = problem.launch(spec, module, plan.phase2, &workspace)?;
    let got_o = output_values(
        spec.dtype,
        launch
            .buffer(o_at)
            .ok_or("the output argument is not a buffer")?,
    );
    let state_error = if case.want_ht {
        let got_ht: Vec<f64> = launch
            .buffer(ht_at)
            .ok_or("the final-state argument is not a buffer")?
            .to_f32()
            .into_iter()
            .map(f64::from)
            .collect();
        reference::max_rel_diff(&got_ht, want_ht.data())
    } else {
        0.0
    };
    Ok((
        EmuCheck {
            o_error: match spec.dtype {
                Dtype::F32 => reference::max_rel_diff(&got_o, want_o.data()),
                Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got_o, want_o.data()),
            },
            state_error,
            unwritten_shared_reads: phase1.as_ref().map_or(0, unwritten_shared_reads)
                + unwritten_shared_reads(&report),
            report: Some(report),
        },
        phase1,
    ))
}
