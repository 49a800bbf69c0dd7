//! Run a catalog parallel-forward kernel's PTX in the emulator and hold o to the f64
//! reference (`reference::parallel` on the dtype-rounded inputs). The default problem has
//! two full query tiles and a partial third, so it crosses the diagonal, off-diagonal and
//! partial-tile code; [`check_on`] runs any (batch, heads, T).
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses. The grid is
//! `kernel_gen::plan`'s (one CTA per query tile and value slice).

use kernel_gen::emu::{Buffer, Launch, Param};

use kernel_gen::{GammaSet, KernelSpec, LaunchGeometry, param_names};
use retention_core::{Dtype, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::LaunchTarget;

use crate::io::{
    EmuCheck, check_heads, emu_dtype, gammas_for, input_buffer, output_values, position,
    state_work, tensor, unwritten_shared_reads,
};

/// Scale applied to q (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.29;

/// (batch, heads, T) a spec is exercised with: one row, the spec's heads (3 for runtime γ),
/// and T = two tiles plus 5 tokens.
pub fn problem_size(spec: &KernelSpec) -> (usize, usize, usize) {
    let heads = check_heads(spec);
    let tile = spec.chunk.unwrap_or(1) as usize;
    (1, heads, 2 * tile + 5)
}

/// Emulated work (rows × heads × T × K × V): decides whether a sampled run emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let (b, h, t) = problem_size(spec);
    state_work(spec, b, h, t)
}

/// Run `spec` (a parallel spec) in the emulator against the reference.
///
/// # Errors
/// A one-line reason: launch geometry, an unknown parameter, an emulator error, or a
/// reference failure. Results off the reference are not errors here: see
/// [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    check_on(spec, module, problem_size(spec), seed)
}

/// [`check`] on a chosen (batch, heads, T); a named gamma set fixes the heads to its own.
/// The result's `state_error` is 0 (the parallel form has no state).
///
/// # Errors
/// As [`check`].
pub fn check_on(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    size: (usize, usize, usize),
    seed: u64,
) -> Result<EmuCheck, String> {
    let (b, h, t) = heads_of(spec, size);
    let size3 = kernel_gen::LaunchSize {
        rows: b as u32,
        heads: h as u32,
        tokens: t as u32,
    };
    let geometry = kernel_gen::plan(spec, size3)
        .map_err(|e| e.to_string())?
        .geometry;
    check_launch(spec, module, size, seed, geometry)
}

/// (batch, heads, T) with the heads of a named gamma set.
fn heads_of(spec: &KernelSpec, (b, h, t): (usize, usize, usize)) -> (usize, usize, usize) {
    match spec.gammas {
        GammaSet::Retnet { heads } => (b, heads as usize, t),
        GammaSet::Runtime => (b, h, t),
    }
}

/// [`check_on`] with a chosen launch `geometry` (any grid z that is a multiple of the value
/// slices is correct: CTAs then walk several query tiles).
///
/// # Errors
/// As [`check`].
pub fn check_launch(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    size: (usize, usize, usize),
    seed: u64,
    geometry: LaunchGeometry,
) -> Result<EmuCheck, String> {
    let (b, h, t) = heads_of(spec, size);
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
    let (q, kk, vv) = (
        round(b * t * h * k),
        round(b * t * h * k),
        round(b * t * h * v),
    );
    let want_o = reference::parallel(
        &tensor(vec![b, t, h, k], &q)?,
        &tensor(vec![b, t, h, k], &kk)?,
        &tensor(vec![b, t, h, v], &vv)?,
        &params,
    )
    .map_err(|e| e.to_string())?;

    let names = param_names(spec);
    let o_at = position(&names, "p_o", spec)?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in &names {
        launch = launch.arg(match *name {
            "p_q" => Param::Buffer(input_buffer(spec.dtype, &q)),
            "p_k" => Param::Buffer(input_buffer(spec.dtype, &kk)),
            "p_v" => Param::Buffer(input_buffer(spec.dtype, &vv)),
            "p_o" => Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), b * t * h * v).output()),
            "p_t" => Param::U32(t as u32),
            "p_scale" => Param::F32(SCALE as f32),
            "p_heads" => Param::U32(h as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(
                &(0..h).map(|i| gammas.log2(i) as f32).collect::<Vec<_>>(),
            )),
            other => return Err(format!("verify cannot fill parallel parameter `{other}`")),
        });
    }
    let report = module
        .execute(spec, &mut launch)
        .map_err(|e| e.to_string())?;
    let got_o = output_values(
        spec.dtype,
        launch
            .buffer(o_at)
            .ok_or("the output argument is not a buffer")?,
    );
    Ok(EmuCheck {
        o_error: match spec.dtype {
            Dtype::F32 => reference::max_rel_diff(&got_o, want_o.data()),
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got_o, want_o.data()),
        },
        state_error: 0.0,
        unwritten_shared_reads: unwritten_shared_reads(&report),
        report: Some(report),
    })
}
