//! Run the gated MSR epilogue's kernels (forward: y; backward: do, dg) on the emulator or a
//! GPU and hold them to the f64 reference (`reference::msr_epilogue`,
//! `reference::msr_epilogue_backward` on the dtype-rounded inputs): f32 ≤ 1e-5 max relative
//! error, f16/bf16 ≤ 5e-3 relative RMSE, each output on its own (ARCHITECTURE §4).
//!
//! Cases: a row count that is not a multiple of the CTA's rows (the last CTA has idle
//! warps), eps = 1e-5, and eps = 0 with one all-zero row (whose outputs must be 0, not NaN).
//! The emulator's global byte counters are returned beside the minimum (every input element
//! read once, every output element written once), so tests can hold traffic to it.
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses.

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::{KernelOp, KernelSpec, launch_geometry, param_names};
use retention_core::{Dtype, SplitMix64};
use retention_kernels::reference;
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::io::{EmuCheck, emu_dtype, input_buffer, output_values, tensor};

/// Magnitude of o (not 1, so a kernel that skips the normalisation fails).
const O_SCALE: f64 = 3.0;
/// Magnitude of g: σ(g) from near 0 to near 1.
const G_SCALE: f64 = 6.0;

/// One checked problem: `tokens` (B·T) × `heads` rows of V entries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpilogueCase {
    /// B·T.
    pub tokens: usize,
    /// H.
    pub heads: usize,
    /// The RMSNorm eps.
    pub eps: f64,
    /// A row (token·H + head) of o set to zeros.
    pub zero_row: Option<usize>,
}

/// The cases of [`check`]: 3 × 3 = 9 rows (not a multiple of the 4 rows of a 128-thread
/// CTA) with eps = 1e-5, then 5 × 2 = 10 rows with eps = 0 and row 6 all zeros.
pub fn cases() -> Vec<EpilogueCase> {
    vec![
        EpilogueCase {
            tokens: 3,
            heads: 3,
            eps: 1e-5,
            zero_row: None,
        },
        EpilogueCase {
            tokens: 5,
            heads: 2,
            eps: 0.0,
            zero_row: Some(6),
        },
    ]
}

/// Emulated work of [`check`] (elements of o over every case).
pub fn cost(spec: &KernelSpec) -> usize {
    cases().iter().map(|c| c.tokens * c.heads).sum::<usize>() * spec.v as usize
}

/// What one run of an epilogue kernel gave.
#[derive(Debug, Clone)]
pub struct EpilogueRun {
    /// Each output's error against the reference (max relative for f32, relative RMSE for
    /// 16-bit): `y`, or `do` and `dg`.
    pub errors: Vec<(&'static str, f64)>,
    /// Each output as the kernel wrote it, widened to f64 (`[rows, V]`, same order).
    pub outputs: Vec<Vec<f64>>,
    /// The launch's report.
    pub report: LaunchReport,
    /// Global bytes the kernel must read at least (each input element once).
    pub min_bytes_read: u64,
    /// Global bytes it must write at least (each output element once).
    pub min_bytes_written: u64,
}

/// The error metric of ARCHITECTURE §4 for `dtype`; NaN counts as infinitely wrong.
fn error(dtype: Dtype, got: &[f64], want: &[f64]) -> f64 {
    let e = match dtype {
        Dtype::F32 => reference::max_rel_diff(got, want),
        Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(got, want),
    };
    if e.is_nan() { f64::INFINITY } else { e }
}

/// Run `spec` (either epilogue op) on one case against the reference.
///
/// # Errors
/// A one-line reason: an unknown parameter, an emulator fault (out of bounds, race,
/// unsupported instruction), or a reference failure.
pub fn run_case(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    case: &EpilogueCase,
    seed: u64,
) -> Result<EpilogueRun, String> {
    let (rows, v, dtype) = (case.tokens * case.heads, spec.v as usize, spec.dtype);
    let mut rng = SplitMix64::new(seed);
    let mut draw = |scale: f64| -> Vec<f64> {
        rng.vec(rows * v)
            .into_iter()
            .map(|x| dtype.round(x * scale))
            .collect()
    };
    let (mut o, g, dy) = (draw(O_SCALE), draw(G_SCALE), draw(1.0));
    if let Some(r) = case.zero_row {
        o[r * v..(r + 1) * v].fill(0.0);
    }
    let shape = vec![1, case.tokens, case.heads, v];
    let (to, tg, tdy) = (
        tensor(shape.clone(), &o)?,
        tensor(shape.clone(), &g)?,
        tensor(shape, &dy)?,
    );
    let backward = spec.op == KernelOp::EpilogueBackward;
    let want: Vec<(&'static str, Vec<f64>)> = if backward {
        let grads = reference::msr_epilogue_backward(&to, &tg, case.eps, &tdy)
            .map_err(|e| e.to_string())?;
        vec![
            ("do", grads.d_o.data().to_vec()),
            ("dg", grads.dg.data().to_vec()),
        ]
    } else {
        let y = reference::msr_epilogue(&to, &tg, case.eps).map_err(|e| e.to_string())?;
        vec![("y", y.data().to_vec())]
    };

    let geometry =
        launch_geometry(spec, case.tokens as u32, case.heads as u32).map_err(|e| e.to_string())?;
    let out = Buffer::zeros(emu_dtype(dtype), rows * v).output();
    let names = param_names(spec);
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block);
    for &name in &names {
        launch = launch.arg(match name {
            "p_o" => Param::Buffer(input_buffer(dtype, &o)),
            "p_g" => Param::Buffer(input_buffer(dtype, &g)),
            "p_dy" => Param::Buffer(input_buffer(dtype, &dy)),
            "p_y" | "p_do" | "p_dg" => Param::Buffer(out.clone()),
            "p_rows" => Param::U32(rows as u32),
            "p_eps" => Param::F32(case.eps as f32),
            other => return Err(format!("cannot fill epilogue parameter `{other}`")),
        });
    }
    let report = target
        .execute(spec, &mut launch)
        .map_err(|e| format!("{}: {e}", spec.slug()))?;
    let (mut errors, mut outputs) = (Vec::new(), Vec::new());
    for (name, reference) in &want {
        let param = format!("p_{name}");
        let buf = names
            .iter()
            .position(|n| *n == param)
            .and_then(|i| launch.buffer(i))
            .ok_or_else(|| format!("no `{param}` buffer"))?;
        let got = output_values(dtype, buf);
        errors.push((*name, error(dtype, &got, reference)));
        outputs.push(got);
    }
    let bytes = (rows * v * dtype.size_bytes()) as u64;
    let inputs = if backward { 3 } else { 2 };
    Ok(EpilogueRun {
        errors,
        outputs,
        report,
        min_bytes_read: inputs * bytes,
        min_bytes_written: want.len() as u64 * bytes,
    })
}

/// Run `spec` on every case of [`cases`] against the reference; the worst error of any
/// output goes into [`EmuCheck::o_error`] (there is no state).
///
/// # Errors
/// As [`run_case`], plus a spec of another op. Results off the reference are not errors
/// here: see [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, target: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    if !matches!(spec.op, KernelOp::Epilogue | KernelOp::EpilogueBackward) {
        return Err(format!("{} is not an epilogue op", spec.op.name()));
    }
    let mut out = EmuCheck {
        o_error: 0.0,
        state_error: 0.0,
        report: None,
        unwritten_shared_reads: 0,
    };
    for (i, case) in cases().iter().enumerate() {
        let run =
            run_case(spec, target, case, seed + i as u64).map_err(|e| format!("{case:?}: {e}"))?;
        for (_, e) in &run.errors {
            out.o_error = out.o_error.max(*e);
        }
        out.unwritten_shared_reads += crate::io::unwritten_shared_reads(&run.report);
        out.report = Some(run.report);
    }
    Ok(out)
}
