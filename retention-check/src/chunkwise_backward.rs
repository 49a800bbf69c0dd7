//! The chunkwise backward's three kernels (`chunkwise_bwd_dq`, `_dk`, `_dv`; the
//! `chunkwise_backward` family of kernel-gen) run as PTX on a launch target and held to the
//! f64 reference backward (`reference::chunkwise_backward` on the dtype-rounded inputs, any
//! reference chunk: the gradients do not depend on it) with the forward's tolerances
//! (ARCHITECTURE §4 and §7): dq, dk, dv ≤ 1e-5 max relative (f32) or 5e-3 relative RMSE
//! (f16/bf16), dH0 ≤ 1e-5 max relative, and d log γ (the three kernels' partials summed per
//! head in f64) within 1e-5 of the sum of its terms' magnitudes (the reference backward on
//! |inputs|, as the CPU backward's tests bound it).

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, EmuReport, Launch, Param};
use kernel_gen::{KernelOp, KernelSpec, launch_geometry, param_names};
use retention_core::{Dtype, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::EmuCheck;
use crate::io::{
    check_heads, emu_dtype, gammas_for, input_buffer, output_values, position, state_work, tensor,
};

pub use kernel_gen::kernels::chunkwise_backward::OPS;
use kernel_gen::kernels::chunkwise_backward::preferred;
use kernel_gen::kernels::chunkwise_backward::tc_plan::is_tensor_core;

/// One backward problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackwardCase {
    /// Batch rows.
    pub batch: usize,
    /// Heads (a named gamma set fixes its own).
    pub heads: usize,
    /// Tokens per row.
    pub t: usize,
    /// The chunk of the reference derivation (any C ≥ 1).
    pub reference_chunk: usize,
    /// Whether H0 is given.
    pub with_h0: bool,
    /// Whether dH_T is given.
    pub with_dht: bool,
    /// The scale s.
    pub scale: f64,
}

/// How far each gradient is from the reference, and each kernel's emulator report.
#[derive(Debug, Clone)]
pub struct BackwardCheck {
    /// Error of dq, dk, dv: max relative (f32) or relative RMSE (16-bit).
    pub grad_errors: [f64; 3],
    /// Max relative error of dH0.
    pub dh0_error: f64,
    /// Largest |d log γ_h − reference| / Σ|terms|_h over the heads.
    pub dlog_gamma_error: f64,
    /// d log γ per head as the kernels computed it (partials summed in f64).
    pub dlog_gamma: Vec<f64>,
    /// Reports of the dq, dk and dv launches (emulated targets only).
    pub reports: Vec<EmuReport>,
    /// The dv launch's report, emulated or measured.
    pub last_report: Option<LaunchReport>,
}

/// The case `retention verify` runs a backward spec with: one row, the spec's heads (3 for
/// runtime γ), a full kernel chunk and a partial one, H0 and dH_T, reference chunk 7.
pub fn problem_case(spec: &KernelSpec) -> BackwardCase {
    let c = spec.chunk.unwrap_or(1) as usize;
    BackwardCase {
        batch: 1,
        heads: check_heads(spec),
        t: c + 5,
        reference_chunk: 7,
        with_h0: true,
        with_dht: true,
        scale: 0.29,
    }
}

/// Emulated work (rows × heads × T × K × V, three kernels): decides whether a sampled run
/// emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let c = problem_case(spec);
    3 * state_work(spec, c.batch, c.heads, c.t)
}

/// Run the three kernels of `spec`'s (K, V, chunk, gammas, dtype, arch) on [`problem_case`]
/// as one verdict: the output error is the worst of dq, dk, dv, the state error the worst of
/// dH0 and d log γ (both held to 1e-5).
///
/// # Errors
/// As [`check_case`].
pub fn check(spec: &KernelSpec, target: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    let got = check_case(spec, target, problem_case(spec), seed)?;
    Ok(EmuCheck {
        o_error: got.grad_errors.iter().copied().fold(0.0, f64::max),
        state_error: got.dh0_error.max(got.dlog_gamma_error),
        unwritten_shared_reads: got.reports.iter().map(|r| r.shared_uninit_reads).sum(),
        report: got.last_report,
    })
}

impl BackwardCheck {
    /// Why the result is off, or `None` within the tolerances (and no read of shared memory
    /// nothing wrote, in any dtype: these kernels zero-fill what they stage).
    pub fn failure(&self, dtype: Dtype) -> Option<String> {
        let tol = crate::EmuCheck::o_tolerance(dtype);
        for (name, e) in ["dq", "dk", "dv"].iter().zip(self.grad_errors) {
            if e.is_nan() || e > tol {
                return Some(format!("{name} error {e:.2e} > {tol:.0e}"));
            }
        }
        if self.dh0_error.is_nan() || self.dh0_error > 1e-5 {
            return Some(format!("dh0 error {:.2e} > 1e-5", self.dh0_error));
        }
        if self.dlog_gamma_error.is_nan() || self.dlog_gamma_error > 1e-5 {
            return Some(format!(
                "d log gamma error {:.2e} > 1e-5 of its terms",
                self.dlog_gamma_error
            ));
        }
        let uninit: u64 = self.reports.iter().map(|r| r.shared_uninit_reads).sum();
        (uninit > 0).then(|| format!("{uninit} reads of shared memory nothing had written"))
    }
}

/// The inputs of one case, rounded to the dtype (states f32).
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_o: Vec<f64>,
    h0: Vec<f64>,
    dht: Vec<f64>,
}

/// Run the three kernels of `spec` (any of the three ops; its K, V, chunk, gammas, dtype and
/// arch are used) on `target` for `case` and compare with the reference.
///
/// # Errors
/// A one-line reason: launch geometry, an unknown parameter, an emulator fault, or a
/// reference failure. Results off the reference are not errors: see
/// [`BackwardCheck::failure`].
pub fn check_case(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    case: BackwardCase,
    seed: u64,
) -> Result<BackwardCheck, String> {
    let h = match spec.gammas {
        kernel_gen::GammaSet::Retnet { heads } => heads as usize,
        kernel_gen::GammaSet::Runtime => case.heads,
    };
    let (b, t) = (case.batch, case.t);
    let (k, v) = (spec.k as usize, spec.v as usize);
    let gammas = gammas_for(spec.gammas, h)?;
    let params = RetentionParams::new(gammas.clone(), Some(case.scale));
    let mut rng = SplitMix64::new(seed);
    let mut round = |len: usize| -> Vec<f64> {
        rng.vec(len)
            .into_iter()
            .map(|x| spec.dtype.round(x))
            .collect()
    };
    let inputs = Inputs {
        q: round(b * t * h * k),
        k: round(b * t * h * k),
        v: round(b * t * h * v),
        d_o: round(b * t * h * v),
        h0: round(b * h * k * v)
            .into_iter()
            .map(|x| f64::from(x as f32))
            .collect(),
        dht: round(b * h * k * v)
            .into_iter()
            .map(|x| f64::from(x as f32))
            .collect(),
    };
    let state = tensor(vec![b, h, k, v], &inputs.h0)?;
    let dht = tensor(vec![b, h, k, v], &inputs.dht)?;
    let want = reference::chunkwise_backward(
        &tensor(vec![b, t, h, k], &inputs.q)?,
        &tensor(vec![b, t, h, k], &inputs.k)?,
        &tensor(vec![b, t, h, v], &inputs.v)?,
        &params,
        case.reference_chunk,
        case.with_h0.then_some(&state),
        &tensor(vec![b, t, h, v], &inputs.d_o)?,
        case.with_dht.then_some(&dht),
    )
    .map_err(|e| e.to_string())?;
    let bound = terms_magnitude(spec, &inputs, (b, h, t), &params, case)?;

    let log2: Vec<f32> = (0..h).map(|i| gammas.log2(i) as f32).collect();
    let mut grad_errors = [0.0; 3];
    let mut dh0_error = 0.0;
    let mut reports = Vec::new();
    let mut last_report = None;
    let mut dlog_gamma = vec![0.0; h];
    for (i, op) in OPS.into_iter().enumerate() {
        // A tensor-core spec runs each op on its tensor-core kernel where it has one.
        let s = if is_tensor_core(spec) {
            preferred(&KernelSpec { op, ..*spec })
        } else {
            KernelSpec { op, ..*spec }
        };
        let out_len = b
            * t
            * h
            * if op == KernelOp::ChunkwiseBackwardDv {
                v
            } else {
                k
            };
        let state_in = if op == KernelOp::ChunkwiseBackwardDq {
            case.with_h0.then_some(&inputs.h0)
        } else {
            case.with_dht.then_some(&inputs.dht)
        };
        let slices = launch_geometry(&s, 1, h as u32)
            .map_err(|e| e.to_string())?
            .grid[2] as usize;
        let mut launch = build_launch(&s, (b, h, t), &inputs, (state_in, out_len), &log2, case)?;
        let report = target.execute(&s, &mut launch).map_err(|e| e.to_string())?;
        if let Some(r) = report.emulated() {
            reports.push(r.clone());
        }
        last_report = Some(report);
        let names = param_names(&s);
        let got = output_values(
            spec.dtype,
            launch
                .buffer(position(&names, "p_grad", &s)?)
                .ok_or("the gradient argument is not a buffer")?,
        );
        let partials = launch
            .buffer(position(&names, "p_dlog_gamma", &s)?)
            .ok_or("the d log gamma argument is not a buffer")?
            .to_f32();
        for (i, chunk) in partials.chunks(slices * 256).enumerate() {
            dlog_gamma[i % h] += chunk.iter().map(|&x| f64::from(x)).sum::<f64>();
        }
        let want_grad = [&want.dq, &want.dk, &want.dv][i].data();
        grad_errors[i] = match spec.dtype {
            Dtype::F32 => reference::max_rel_diff(&got, want_grad),
            Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got, want_grad),
        };
        if op == KernelOp::ChunkwiseBackwardDv {
            let got_dh0: Vec<f64> = launch
                .buffer(position(&names, "p_dh0", &s)?)
                .ok_or("the dH0 argument is not a buffer")?
                .to_f32()
                .into_iter()
                .map(f64::from)
                .collect();
            dh0_error = reference::max_rel_diff(&got_dh0, want.dh0.data());
        }
    }
    let dlog_gamma_error = dlog_gamma
        .iter()
        .zip(want.dlog_gamma.data())
        .zip(bound)
        .map(|((g, w), b)| (g - w).abs() / b.max(1e-300))
        .fold(0.0, f64::max);
    Ok(BackwardCheck {
        grad_errors,
        dh0_error,
        dlog_gamma_error,
        dlog_gamma,
        reports,
        last_report,
    })
}

/// Σ|terms| of d log γ per head: the reference backward on |inputs| with |s|.
fn terms_magnitude(
    spec: &KernelSpec,
    inputs: &Inputs,
    (b, h, t): (usize, usize, usize),
    params: &RetentionParams,
    case: BackwardCase,
) -> Result<Vec<f64>, String> {
    let (k, v) = (spec.k as usize, spec.v as usize);
    let abs = |shape: Vec<usize>, x: &[f64]| {
        tensor(shape, &x.iter().map(|y| y.abs()).collect::<Vec<_>>())
    };
    let abs_params = RetentionParams::new(params.gammas.clone(), Some(case.scale.abs()));
    let state = abs(vec![b, h, k, v], &inputs.h0)?;
    let dht = abs(vec![b, h, k, v], &inputs.dht)?;
    let g = reference::chunkwise_backward(
        &abs(vec![b, t, h, k], &inputs.q)?,
        &abs(vec![b, t, h, k], &inputs.k)?,
        &abs(vec![b, t, h, v], &inputs.v)?,
        &abs_params,
        case.reference_chunk,
        case.with_h0.then_some(&state),
        &abs(vec![b, t, h, v], &inputs.d_o)?,
        case.with_dht.then_some(&dht),
    )
    .map_err(|e| e.to_string())?;
    Ok(g.dlog_gamma.data().to_vec())
}

/// The launch of one kernel, its arguments filled by name.
fn build_launch(
    spec: &KernelSpec,
    (b, h, t): (usize, usize, usize),
    inputs: &Inputs,
    (state_in, out_len): (Option<&Vec<f64>>, usize),
    log2: &[f32],
    case: BackwardCase,
) -> Result<Launch, String> {
    let geometry = launch_geometry(spec, b as u32, h as u32).map_err(|e| e.to_string())?;
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes);
    let ws_len = geometry.grid.iter().product::<u32>() as usize * 256;
    let f32_buffer = |x: &[f64]| Buffer::from_f32(&x.iter().map(|&y| y as f32).collect::<Vec<_>>());
    for name in param_names(spec) {
        launch = launch.arg(match name {
            "p_q" => Param::Buffer(input_buffer(spec.dtype, &inputs.q)),
            "p_k" => Param::Buffer(input_buffer(spec.dtype, &inputs.k)),
            "p_v" => Param::Buffer(input_buffer(spec.dtype, &inputs.v)),
            "p_do" => Param::Buffer(input_buffer(spec.dtype, &inputs.d_o)),
            "p_grad" => Param::Buffer(Buffer::zeros(emu_dtype(spec.dtype), out_len).output()),
            "p_state" => state_in.map_or(Param::U64(0), |s| Param::Buffer(f32_buffer(s))),
            "p_dh0" => Param::Buffer(Buffer::zeros(EmuDtype::F32, inputs.h0.len()).output()),
            "p_h0" if case.with_h0 => Param::Buffer(f32_buffer(&inputs.h0)),
            "p_h0" => Param::U64(0),
            "p_dlog_gamma" => Param::Buffer(Buffer::zeros(EmuDtype::F32, ws_len).output()),
            "p_t" => Param::U32(t as u32),
            "p_scale" => Param::F32(case.scale as f32),
            "p_heads" => Param::U32(h as u32),
            "p_log2_gamma" => Param::Buffer(Buffer::from_f32(log2)),
            other => {
                return Err(format!(
                    "cannot fill chunkwise backward parameter `{other}`"
                ));
            }
        });
    }
    Ok(launch)
}
