//! Run a catalog chunkwise kernel's PTX in the emulator on one problem that spans a full and a
//! partial chunk, with an initial state and the final state requested, and hold o and H_T to
//! the f64 reference (`reference::chunkwise` on the dtype-rounded inputs).
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Param};

use kernel_gen::{GammaSet, KernelSpec, launch_geometry, param_names};
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
/// and a T of one full chunk plus a partial one.
pub fn problem_size(spec: &KernelSpec) -> (usize, usize, usize) {
    let heads = check_heads(spec);
    let chunk = spec.chunk.unwrap_or(1) as usize;
    (1, heads, chunk + 5)
}

/// Emulated work (rows × heads × T × K × V): decides whether a sampled run emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let (b, h, t) = problem_size(spec);
    state_work(spec, b, h, t)
}

/// Run `spec` (a chunkwise spec) in the emulator against the reference.
///
/// # Errors
/// A one-line reason: no chunk in the spec, launch geometry, an unknown parameter, an
/// emulator error, or a reference failure. Results off the reference are not errors here:
/// see [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    check_on(spec, module, problem_size(spec), seed)
}

/// [`check`] on a chosen (batch, heads, T); a named gamma set fixes the heads to its own.
///
/// # Errors
/// As [`check`].
pub fn check_on(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    (batch, heads, t): (usize, usize, usize),
    seed: u64,
) -> Result<EmuCheck, String> {
    let case = ChunkCase {
        batch,
        heads,
        t,
        with_h0: true,
        want_ht: true,
    };
    Ok(check_case(spec, module, case, seed)?.check)
}

/// One chunkwise problem: (batch, heads, T), with or without H0, with or without H_T asked
/// for (a kernel must then leave `p_ht` alone: it is passed as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCase {
    /// Batch rows.
    pub batch: usize,
    /// Heads (a named gamma set fixes its own).
    pub heads: usize,
    /// Tokens per row.
    pub t: usize,
    /// Whether H0 is given.
    pub with_h0: bool,
    /// Whether H_T is asked for.
    pub want_ht: bool,
}

/// What [`check_case`] found: the verdict, and the output error that rounding the f64
/// reference to the dtype alone gives (0 for f32) — a 16-bit kernel's error cannot be below
/// it and should not be far above it.
#[derive(Debug, Clone)]
pub struct ChunkRun {
    /// The verdict against the reference.
    pub check: EmuCheck,
    /// The rounding floor of the output error.
    pub o_rounding_floor: f64,
}

/// [`check`] on a chosen [`ChunkCase`].
///
/// # Errors
/// As [`check`].
pub fn check_case(
    spec: &KernelSpec,
    module: &dyn LaunchTarget,
    case: ChunkCase,
    seed: u64,
) -> Result<ChunkRun, String> {
    let ChunkCase {
        batch: b,
        heads: h,
        t,
        with_h0,
        want_ht: ask_ht,
    } = case;
    let chunk = spec
        .chunk
        .ok_or_else(|| format!("{} has no chunk size", spec.slug()))? as usize;
    let h = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => h,
    };
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
    // f32 state values (the kernel reads f32).
    let h0: Vec<f64> = round(b * h * k * v)
        .into_iter()
        .map(|x| f64::from(x as f32))
        .collect();
    let h0_tensor = tensor(vec![b, h, k, v], &h0)?;
    let (want_o, want_ht) = reference::chunkwise(
        &tensor(vec![b, t, h, k], &q)?,
        &tensor(vec![b, t, h, k], &kk)?,
        &tensor(vec![b, t, h, v], &vv)?,
        &params,
        chunk,
        with_h0.then_some(&h0_tensor),
    )
    .map_err(|e| e.to_string())?;

    let names = param_names(spec);
    let (o_at, ht_at) = (
        position(&names, "p_o", spec)?,
        position(&names, "p_ht", spec)?,
    );
    let geometry = launch_geometry(spec, b as u32, h as u32).map_err(|e| e.to_string())?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in &names {
        launch = launch.arg(match *name {
            "p_q" => Param::Buffer(input_buffer(spec.dtype, &q)),
            "p_k" => Param::Buffer(input_buffer(spec.dtype, &kk)),
            "p_v" => Param::Buffer(input_buffer(spec.dtype, &vv)),
            "p_o" => Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), b * t * h * v).output()),
            "p_h0" if with_h0 => Param::Buffer(Buffer::from_f32(
                &h0.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            )),
            "p_ht" if ask_ht => Param::Buffer(Buffer::zeros(EmuDtype::F32, b * h * k * v).output()),
            "p_h0" | "p_ht" => Param::U64(0),
            "p_t" => Param::U32(t as u32),
            "p_scale" => Param::F32(SCALE as f32),
            "p_heads" => Param::U32(h as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(
                &(0..h).map(|i| gammas.log2(i) as f32).collect::<Vec<_>>(),
            )),
            other => return Err(format!("verify cannot fill chunkwise parameter `{other}`")),
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
    let state_error = if ask_ht {
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
    let rounded: Vec<f64> = want_o.data().iter().map(|&x| spec.dtype.round(x)).collect();
    let check = EmuCheck {
        o_error: match spec.dtype {
            Dtype::F32 => reference::max_rel_diff(&got_o, want_o.data()),
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got_o, want_o.data()),
        },
        state_error,
        unwritten_shared_reads: unwritten_shared_reads(&report),
        report: Some(report),
    };
    Ok(ChunkRun {
        check,
        o_rounding_floor: match spec.dtype {
            Dtype::F32 => 0.0,
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&rounded, want_o.data()),
        },
    })
}
