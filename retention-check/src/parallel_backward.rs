//! Run the three kernels of the parallel backward (dQ, dK and dV passes of the
//! `parallel_backward` family) in the emulator, or on a GPU through a launch target, and hold
//! dq, dk and dv to the f64 reference (`reference::parallel_backward` on the dtype-rounded
//! inputs) with the forward's tolerances (ARCHITECTURE §4): f32 ≤ 1e-5 max relative,
//! f16/bf16 ≤ 5e-3 relative RMSE, no read of unwritten shared memory; and d log γ (the sum of
//! the fourth pass's partials) as ARCHITECTURE §7 holds it: within 1e-5 of the sum of its
//! terms' magnitudes (the reference on |q|, |k|, |v|, |dO|), in every dtype.
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses. The grid is
//! the family's plan (one CTA per owned tile and output slice) unless a test picks another.

use kernel_gen::emu::{Buffer, Launch, Param};
use kernel_gen::kernels::parallel_backward::{Pass, dlog_gamma_partials};
use kernel_gen::{GammaSet, KernelSpec, LaunchGeometry, LaunchSize, param_names};
use retention_core::{Dtype, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::io::{
    EmuCheck, emu_dtype, gammas_for, input_buffer, output_values, position, tensor,
    unwritten_shared_reads,
};

/// The problem one check runs: (batch, heads, T) and the scale s.
#[derive(Debug, Clone, Copy)]
pub struct Problem {
    /// Batch rows.
    pub batch: usize,
    /// Heads (a named gamma set fixes them to its own).
    pub heads: usize,
    /// Tokens per row.
    pub tokens: usize,
    /// The scale applied to the scores.
    pub scale: f64,
}

/// How close each gradient came to the reference, with each pass's launch report.
#[derive(Debug, Clone)]
pub struct BackwardCheck {
    /// dq (its error in `o_error`) and the dQ pass's report.
    pub dq: EmuCheck,
    /// dk and the dK pass's report.
    pub dk: EmuCheck,
    /// dv and the dV pass's report.
    pub dv: EmuCheck,
    /// d log γ: `o_error` is the worst head's |got − want| / Σ|terms|; the d log γ pass's
    /// report.
    pub dlog_gamma: EmuCheck,
}

/// d log γ's tolerance relative to the sum of its terms' magnitudes (ARCHITECTURE §7).
pub const DLOG_GAMMA_TOLERANCE: f64 = 1e-5;

impl BackwardCheck {
    /// The first gradient off the reference for `dtype`, named, or `None`.
    pub fn failure(&self, dtype: Dtype) -> Option<String> {
        let g = &self.dlog_gamma;
        [("dq", &self.dq), ("dk", &self.dk), ("dv", &self.dv)]
            .into_iter()
            .find_map(|(name, c)| c.failure(dtype).map(|why| format!("{name}: {why}")))
            .or_else(|| {
                (g.o_error.is_nan() || g.o_error > DLOG_GAMMA_TOLERANCE).then(|| {
                    format!(
                        "dlog_gamma: error {:.2e} of the terms' magnitudes > {DLOG_GAMMA_TOLERANCE:.0e}",
                        g.o_error
                    )
                })
            })
            .or_else(|| {
                (g.unwritten_shared_reads > 0).then(|| {
                    format!(
                        "dlog_gamma: {} reads of shared memory nothing had written",
                        g.unwritten_shared_reads
                    )
                })
            })
    }

    /// The four checks in pass order (dQ, dK, dV, d log γ).
    pub fn passes(&self) -> [&EmuCheck; 4] {
        [&self.dq, &self.dk, &self.dv, &self.dlog_gamma]
    }
}

/// The inputs of one problem, rounded to the dtype, in f64.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_o: Vec<f64>,
}

/// Run the three passes of `spec`'s shape (any of the three ops; K, V, tile, gammas, dtype and
/// arch are taken from it) on `target` against the reference, each on its planned grid.
///
/// # Errors
/// A one-line reason: a plan, an unknown parameter, an emulator error (bounds, race, …), or a
/// reference failure. Results off the reference are not errors here: see
/// [`BackwardCheck::failure`].
pub fn check(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    problem: Problem,
    seed: u64,
) -> Result<BackwardCheck, String> {
    check_with(spec, target, problem, seed, |s, size| {
        kernel_gen::plan(s, size)
            .map(|p| p.geometry)
            .map_err(|e| e.to_string())
    })
}

/// [`check`] with each pass's grid chosen by `geometry(pass spec, size)`.
///
/// # Errors
/// As [`check`].
pub fn check_with(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    problem: Problem,
    seed: u64,
    geometry: impl Fn(&KernelSpec, LaunchSize) -> Result<LaunchGeometry, String>,
) -> Result<BackwardCheck, String> {
    let heads = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => problem.heads,
    };
    let Problem { batch, tokens, .. } = problem;
    let (k, v) = (spec.k as usize, spec.v as usize);
    let gammas = gammas_for(spec.gammas, heads)?;
    let params = RetentionParams::new(gammas.clone(), Some(problem.scale));
    let mut rng = SplitMix64::new(seed);
    let mut round = |len: usize| {
        rng.vec(len)
            .into_iter()
            .map(|x| spec.dtype.round(x))
            .collect::<Vec<_>>()
    };
    let (qk_len, vo_len) = (batch * tokens * heads * k, batch * tokens * heads * v);
    let x = Inputs {
        q: round(qk_len),
        k: round(qk_len),
        v: round(vo_len),
        d_o: round(vo_len),
    };
    let shapes = (vec![batch, tokens, heads, k], vec![batch, tokens, heads, v]);
    let want = reference_backward(&x, &shapes, &params)?;
    let abs = |x: &[f64]| x.iter().map(|v| v.abs()).collect::<Vec<_>>();
    let x_abs = Inputs {
        q: abs(&x.q),
        k: abs(&x.k),
        v: abs(&x.v),
        d_o: abs(&x.d_o),
    };
    let abs_params = RetentionParams::new(gammas.clone(), Some(problem.scale.abs()));
    let magnitudes = reference_backward(&x_abs, &shapes, &abs_params)?;
    let log2: Vec<f32> = (0..heads).map(|i| gammas.log2(i) as f32).collect();
    let size = LaunchSize {
        rows: batch as u32,
        heads: heads as u32,
        tokens: tokens as u32,
    };
    let run = |pass: Pass, want: &[f64]| -> Result<EmuCheck, String> {
        let pass_spec = KernelSpec {
            op: pass.op(),
            ..*spec
        };
        let g = geometry(&pass_spec, size)?;
        let out_len = match pass {
            Pass::Dv => vo_len,
            Pass::DlogGamma => dlog_gamma_partials(&g),
            Pass::Dq | Pass::Dk => qk_len,
        };
        let (got, report) = run_pass(
            &pass_spec,
            target,
            &x,
            (out_len, tokens, heads),
            g,
            (problem.scale, &log2),
        )?;
        let o_error = if pass == Pass::DlogGamma {
            dlog_gamma_error(&got, (batch, heads), want, magnitudes.dlog_gamma.data())
        } else {
            match spec.dtype {
                Dtype::F32 => reference::max_rel_diff(&got, want),
                Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got, want),
            }
        };
        Ok(EmuCheck {
            o_error,
            state_error: 0.0,
            unwritten_shared_reads: unwritten_shared_reads(&report),
            report: Some(report),
        })
    };
    Ok(BackwardCheck {
        dq: run(Pass::Dq, want.dq.data())?,
        dk: run(Pass::Dk, want.dk.data())?,
        dv: run(Pass::Dv, want.dv.data())?,
        dlog_gamma: run(Pass::DlogGamma, want.dlog_gamma.data())?,
    })
}

/// The f64 reference backward of `x` (q, k `shapes.0`; v, dO `shapes.1`).
fn reference_backward(
    x: &Inputs,
    (qk, vo): &(Vec<usize>, Vec<usize>),
    params: &RetentionParams,
) -> Result<reference::ParallelGradients, String> {
    reference::parallel_backward(
        &tensor(qk.clone(), &x.q)?,
        &tensor(qk.clone(), &x.k)?,
        &tensor(vo.clone(), &x.v)?,
        params,
        &tensor(vo.clone(), &x.d_o)?,
    )
    .map_err(|e| e.to_string())
}

/// The worst head's |Σ partials − want| / Σ|terms|, the partials laid out `[rows][H][z]`.
fn dlog_gamma_error(
    partials: &[f64],
    (rows, heads): (usize, usize),
    want: &[f64],
    magnitudes: &[f64],
) -> f64 {
    let z = (partials.len() / (rows * heads).max(1)).max(1);
    (0..heads)
        .map(|h| {
            let got: f64 = partials
                .chunks(z)
                .enumerate()
                .filter(|(i, _)| i % heads == h)
                .flat_map(|(_, c)| c.iter())
                .sum();
            (got - want[h]).abs() / magnitudes[h].max(f64::MIN_POSITIVE)
        })
        .fold(0.0, f64::max)
}

/// Launch one pass and read its output back as f64.
fn run_pass(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    x: &Inputs,
    (out_len, tokens, heads): (usize, usize, usize),
    geometry: LaunchGeometry,
    (scale, log2): (f64, &[f32]),
) -> Result<(Vec<f64>, LaunchReport), String> {
    let names = param_names(spec);
    let pass = Pass::of(spec.op).ok_or("not a parallel backward spec")?;
    let out_at = position(&names, pass.output_param(), spec)?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    for name in &names {
        launch = launch.arg(match *name {
            "p_q" => Param::Buffer(input_buffer(spec.dtype, &x.q)),
            "p_k" => Param::Buffer(input_buffer(spec.dtype, &x.k)),
            "p_v" => Param::Buffer(input_buffer(spec.dtype, &x.v)),
            "p_do" => Param::Buffer(input_buffer(spec.dtype, &x.d_o)),
            "p_dq" | "p_dk" | "p_dv" => {
                Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), out_len).output())
            }
            "p_dlog_gamma_partial" => {
                Param::Buffer(Buffer::from_f32(&vec![f32::NAN; out_len]).output())
            }
            "p_t" => Param::U32(tokens as u32),
            "p_scale" => Param::F32(scale as f32),
            "p_heads" => Param::U32(heads as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(log2)),
            other => return Err(format!("cannot fill parallel backward parameter `{other}`")),
        });
    }
    let report = target
        .execute(spec, &mut launch)
        .map_err(|e| e.to_string())?;
    let out_dtype = if pass == Pass::DlogGamma {
        Dtype::F32
    } else {
        spec.dtype
    };
    let got = output_values(
        out_dtype,
        launch
            .buffer(out_at)
            .ok_or("the output argument is not a buffer")?,
    );
    Ok((got, report))
}
