//! Run a catalog decode kernel's PTX in the emulator for two steps on a small problem and hold
//! it to the f64 reference: f32 outputs ≤ 1e-5 max relative error, f16/bf16 outputs ≤ 5e-3
//! relative RMSE, the f32 state ≤ 1e-5 max relative error, untouched slots bit-identical (the
//! tolerances of `tests/decode_emulated.rs`).
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses.

use kernel_gen::emu::{Buffer, Launch, Param};

use kernel_gen::{GammaSet, KernelSpec, launch_geometry, param_names};
use retention_core::{Dtype, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::LaunchTarget;

use crate::io::{
    EmuCheck, emu_dtype, gammas_for, input_buffer, output_values, position, state_work,
    unwritten_shared_reads,
};

/// Scale applied to q (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.37;
/// Decode steps run (the second reads the state the first wrote).
const STEPS: usize = 2;

/// Rows and heads a spec is exercised with.
pub fn problem_size(spec: &KernelSpec) -> (usize, usize) {
    match spec.gammas {
        GammaSet::Retnet { heads } => (2, heads as usize),
        GammaSet::Runtime => (3, 2),
    }
}

/// Emulated state elements: the cost that decides whether a sampled run emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let (n, h) = problem_size(spec);
    state_work(spec, n, h, 1)
}

/// One decode problem: `rows` rows of `gammas.len()` heads, row r stepping pool slot
/// `slots[r]` of a pool of `capacity` slots (the others must stay bit-identical), with scale
/// `scale`, for two steps.
#[derive(Debug, Clone)]
pub struct DecodeCase {
    /// Rows (N).
    pub rows: usize,
    /// The decays, one per head.
    pub gammas: Gammas,
    /// The pool slot of each row.
    pub slots: Vec<usize>,
    /// Slots in the pool.
    pub capacity: usize,
    /// Scale applied to q.
    pub scale: f64,
}

impl DecodeCase {
    /// The case [`check`] runs for `spec`: [`problem_size`] rows and heads, rows in
    /// scrambled slots of a pool with three spare slots.
    ///
    /// # Errors
    /// The gamma set's own error.
    pub fn for_spec(spec: &KernelSpec) -> Result<Self, String> {
        let (n, h) = problem_size(spec);
        let capacity = n + 3;
        Ok(DecodeCase {
            rows: n,
            gammas: gammas_for(spec.gammas, h)?,
            slots: (0..n).map(|r| (capacity - 1 + 2 * r) % capacity).collect(),
            capacity,
            scale: SCALE,
        })
    }
}

/// One step's inputs, already rounded to the spec's dtype (what the kernel reads exactly).
struct StepInputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

/// Build the launch argument named `name`.
fn argument(
    name: &str,
    spec: &KernelSpec,
    x: &StepInputs,
    state: &Buffer,
    case: &DecodeCase,
) -> Result<Param, String> {
    let (n, h, slots, gammas) = (case.rows, case.gammas.len(), &case.slots, &case.gammas);
    Ok(match name {
        "p_q" => Param::Buffer(input_buffer(spec.dtype, &x.q)),
        "p_k" => Param::Buffer(input_buffer(spec.dtype, &x.k)),
        "p_v" => Param::Buffer(input_buffer(spec.dtype, &x.v)),
        "p_state" => Param::Buffer(state.clone()),
        "p_slots" => Param::Buffer(Buffer::from_u32(
            &slots.iter().map(|&s| s as u32).collect::<Vec<_>>(),
        )),
        "p_o" => {
            Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), n * h * spec.v as usize).output())
        }
        "p_n" => Param::U32(n as u32),
        "p_scale" => Param::F32(case.scale as f32),
        "p_heads" => Param::U32(h as u32),
        "p_log2_gamma" => Param::Buffer(Buffer::from_f32(
            &(0..h).map(|i| gammas.log2(i) as f32).collect::<Vec<_>>(),
        )),
        other => return Err(format!("verify cannot fill decode parameter `{other}`")),
    })
}

/// Run `spec` (a decode spec) in the emulator against the reference.
///
/// # Errors
/// A one-line reason: launch geometry, an unknown parameter, an emulator error (out of
/// bounds, race, unsupported instruction), or a reference failure. Results off the reference
/// are not errors here: see [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    check_case(spec, module, &DecodeCase::for_spec(spec)?, seed)
}

/// [`check`] on a chosen [`DecodeCase`].
///
/// # Errors
/// As [`check`].
pub fn check_case(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    case: &DecodeCase,
    seed: u64,
) -> Result<EmuCheck, String> {
    let (n, h) = (case.rows, case.gammas.len());
    let (k, v) = (spec.k as usize, spec.v as usize);
    let params = RetentionParams::new(case.gammas.clone(), Some(case.scale));
    let names = param_names(spec);
    let (state_at, o_at) = (
        position(&names, "p_state", spec)?,
        position(&names, "p_o", spec)?,
    );
    // Rows live in their slots; the others must stay untouched.
    let (capacity, slots) = (case.capacity, &case.slots);
    let mut rng = SplitMix64::new(seed);
    let pool0: Vec<f64> = rng
        .vec(capacity * h * k * v)
        .iter()
        .map(|x| f64::from(*x as f32))
        .collect();
    let mut ref_pool =
        HostTensor::new(vec![capacity, h, k, v], pool0.clone()).map_err(|e| e.to_string())?;
    let mut state = Buffer::from_f32(&pool0.iter().map(|&x| x as f32).collect::<Vec<_>>()).output();
    let geometry = launch_geometry(spec, n as u32, h as u32).map_err(|e| e.to_string())?;
    let mut out = EmuCheck {
        o_error: 0.0,
        state_error: 0.0,
        report: None,
        unwritten_shared_reads: 0,
    };
    for step in 0..STEPS {
        let mut round = |len: usize| {
            rng.vec(len)
                .into_iter()
                .map(|x| spec.dtype.round(x))
                .collect::<Vec<_>>()
        };
        let x = StepInputs {
            q: round(n * h * k),
            k: round(n * h * k),
            v: round(n * h * v),
        };
        let t = |shape: Vec<usize>, d: &[f64]| HostTensor::new(shape, d.to_vec());
        let want = reference::decode_step(
            &t(vec![n, h, k], &x.q).map_err(|e| e.to_string())?,
            &t(vec![n, h, k], &x.k).map_err(|e| e.to_string())?,
            &t(vec![n, h, v], &x.v).map_err(|e| e.to_string())?,
            &mut ref_pool,
            slots,
            &params,
        )
        .map_err(|e| e.to_string())?;
        let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
            .dynamic_shared(geometry.dynamic_smem_bytes);
        for name in &names {
            launch = launch.arg(argument(name, spec, &x, &state, case)?);
        }
        let report = module
            .execute(spec, &mut launch)
            .map_err(|e| format!("step {step}: {e}"))?;
        state = launch
            .buffer(state_at)
            .ok_or("the state argument is not a buffer")?
            .clone();
        let got = output_values(
            spec.dtype,
            launch
                .buffer(o_at)
                .ok_or("the output argument is not a buffer")?,
        );
        let o_error = match spec.dtype {
            Dtype::F32 => reference::max_rel_diff(&got, want.data()),
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got, want.data()),
        };
        out.o_error = out.o_error.max(o_error);
        let emulated: Vec<f64> = state.to_f32().into_iter().map(f64::from).collect();
        let sl = h * k * v;
        for slot in 0..capacity {
            let (a, b) = (
                &emulated[slot * sl..(slot + 1) * sl],
                &ref_pool.data()[slot * sl..(slot + 1) * sl],
            );
            if slots.contains(&slot) {
                out.state_error = out.state_error.max(reference::max_rel_diff(a, b));
            } else if a != b {
                return Err(format!("step {step}: untouched slot {slot} changed"));
            }
        }
        out.unwritten_shared_reads += unwritten_shared_reads(&report);
        out.report = Some(report);
    }
    Ok(out)
}
