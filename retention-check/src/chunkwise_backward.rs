//! The chunkwise backward's three kernels (`chunkwise_bwd_dq`, `_dk`, `_dv`; the
//! `chunkwise_backward` family of kernel-gen) run as PTX on a launch target and held to the
//! f64 reference backward (`reference::chunkwise_backward` on the dtype-rounded inputs, any
//! reference chunk: the gradients do not depend on it) with the forward's tolerances
//! (ARCHITECTURE §4 and §7): dq, dk, dv ≤ 1e-5 max relative (f32) or 5e-3 relative RMSE
//! (f16/bf16), dH0 ≤ 1e-5 max relative, and d log γ (the three kernels' partials summed per
//! head in f64) within 1e-5 of the sum of its terms' magnitudes (the reference backward on
//! |inputs|, as the CPU backward's tests bound it).
//!
//! A case with `packed` lengths runs the varlen ops (`chunkwise_varlen_bwd_*`) over one packed
//! batch `[1, ΣT, H, ·]` with device `cu_seqlens` and per-sequence states `[N, H, K, V]`,
//! against `reference::chunkwise_backward_varlen`.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, EmuReport, Launch, Param};
use kernel_gen::kernels::chunkwise_backward::Role;
use kernel_gen::{KernelSpec, launch_geometry, param_names};
use retention_core::{CuSeqlens, Dtype, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::EmuCheck;
use crate::io::{
    check_heads, emu_dtype, gammas_for, input_buffer, output_values, position, state_work, tensor,
};

use kernel_gen::kernels::chunkwise_backward::preferred;
use kernel_gen::kernels::chunkwise_backward::tc_plan::is_tensor_core;
pub use kernel_gen::kernels::chunkwise_backward::{OPS, VARLEN_OPS};

/// One backward problem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackwardCase {
    /// Batch rows (ignored when `packed`).
    pub batch: usize,
    /// Heads (a named gamma set fixes its own).
    pub heads: usize,
    /// Tokens per row (ignored when `packed`).
    pub t: usize,
    /// The sequence lengths of a packed varlen batch (the varlen ops), or `None` (dense).
    pub packed: Option<&'static [usize]>,
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
/// runtime γ), a full kernel chunk and a partial one, H0 and dH_T, reference chunk 7; a
/// varlen spec runs three packed sequences of 1, C + 5 and 3 tokens.
pub fn problem_case(spec: &KernelSpec) -> BackwardCase {
    let c = spec.chunk.unwrap_or(1) as usize;
    let packed: Option<&'static [usize]> = match (spec.op.is_varlen(), c) {
        (false, _) => None,
        (true, 32) => Some(&[1, 37, 3]),
        (true, _) => Some(&[1, 69, 3]),
    };
    BackwardCase {
        batch: packed.map_or(1, <[usize]>::len),
        heads: check_heads(spec),
        t: c + 5,
        packed,
        reference_chunk: 7,
        with_h0: true,
        with_dht: true,
        scale: 0.29,
    }
}

/// Where a case's tokens are: `b` rows of `t` tokens, or one packed row of sequences.
#[derive(Debug, Clone)]
struct Tokens {
    /// Rows of the token tensors (1 when packed).
    rows: usize,
    /// Tokens per row (ΣT when packed).
    t: usize,
    /// Rows of the states: B, or N sequences.
    states: usize,
    /// The packed batch's boundaries.
    cu: Option<CuSeqlens>,
}

impl Tokens {
    fn of(case: &BackwardCase) -> Result<Tokens, String> {
        let Some(lengths) = case.packed else {
            return Ok(Tokens {
                rows: case.batch,
                t: case.t,
                states: case.batch,
                cu: None,
            });
        };
        let mut bounds = vec![0usize];
        for l in lengths {
            bounds.push(bounds.last().copied().unwrap_or(0) + l);
        }
        let total = bounds.last().copied().unwrap_or(0);
        let cu = CuSeqlens::new(bounds, total).map_err(|e| e.to_string())?;
        Ok(Tokens {
            rows: 1,
            t: total,
            states: lengths.len(),
            cu: Some(cu),
        })
    }

    /// The reference backward of this layout.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        &self,
        (q, k, v): (&HostTensor<f64>, &HostTensor<f64>, &HostTensor<f64>),
        params: &RetentionParams,
        chunk: usize,
        h0: Option<&HostTensor<f64>>,
        d_o: &HostTensor<f64>,
        dht: Option<&HostTensor<f64>>,
    ) -> Result<reference::Gradients, String> {
        match &self.cu {
            None => reference::chunkwise_backward(q, k, v, params, chunk, h0, d_o, dht),
            Some(cu) => {
                reference::chunkwise_backward_varlen(q, k, v, cu, params, chunk, h0, d_o, dht)
            }
        }
        .map_err(|e| e.to_string())
    }
}

/// Emulated work (rows × heads × T × K × V, three kernels): decides whether a sampled run
/// emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let c = problem_case(spec);
    match c.packed {
        Some(lengths) => 3 * state_work(spec, 1, c.heads, lengths.iter().sum()),
        None => 3 * state_work(spec, c.batch, c.heads, c.t),
    }
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
    /// One line of the errors: dq/dk/dv, dH0, and d log γ (values and error of its terms).
    pub fn summary(&self) -> String {
        let [dq, dk, dv] = self.grad_errors;
        format!(
            "dq/dk/dv {dq:.2e} {dk:.2e} {dv:.2e}, dh0 {:.2e}, d log gamma {:?}: error {:.2e} \
             of its terms",
            self.dh0_error, self.dlog_gamma, self.dlog_gamma_error
        )
    }

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
    let toks = Tokens::of(&case)?;
    let (b, t, n) = (toks.rows, toks.t, toks.states);
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
        h0: round(n * h * k * v)
            .into_iter()
            .map(|x| f64::from(x as f32))
            .collect(),
        dht: round(n * h * k * v)
            .into_iter()
            .map(|x| f64::from(x as f32))
            .collect(),
    };
    let want = reference_of(&toks, spec, &inputs, h, &params, case, f64::clone)?;
    let abs_params = RetentionParams::new(params.gammas.clone(), Some(case.scale.abs()));
    // Σ|terms| of d log γ per head: the reference backward on |inputs| with |s|.
    let bound = reference_of(&toks, spec, &inputs, h, &abs_params, case, |x| x.abs())?;
    let bound = bound.dlog_gamma.data().to_vec();

    let log2: Vec<f32> = (0..h).map(|i| gammas.log2(i) as f32).collect();
    let mut grad_errors = [0.0; 3];
    let mut dh0_error = 0.0;
    let mut reports = Vec::new();
    let mut last_report = None;
    let mut dlog_gamma = vec![0.0; h];
    let ops = if spec.op.is_varlen() { VARLEN_OPS } else { OPS };
    for (i, op) in ops.into_iter().enumerate() {
        // A tensor-core spec runs each op on its tensor-core kernel where it has one.
        let s = if is_tensor_core(spec) {
            preferred(&KernelSpec { op, ..*spec })
        } else {
            KernelSpec { op, ..*spec }
        };
        let role = Role::of(op).ok_or("not a chunkwise backward op")?;
        let out_len = b * t * h * if role == Role::Dv { v } else { k };
        let state_in = if role == Role::Dq {
            case.with_h0.then_some(&inputs.h0)
        } else {
            case.with_dht.then_some(&inputs.dht)
        };
        let slices = launch_geometry(&s, 1, h as u32)
            .map_err(|e| e.to_string())?
            .grid[2] as usize;
        let mut launch = build_launch(&s, (&toks, h), &inputs, (state_in, out_len), &log2, case)?;
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
        if role == Role::Dv {
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

/// The reference backward of `case` on the inputs mapped by `f` (identity, or |x| for the
/// bound on d log γ's terms).
fn reference_of(
    toks: &Tokens,
    spec: &KernelSpec,
    inputs: &Inputs,
    h: usize,
    params: &RetentionParams,
    case: BackwardCase,
    f: fn(&f64) -> f64,
) -> Result<reference::Gradients, String> {
    let (b, t, n) = (toks.rows, toks.t, toks.states);
    let (k, v) = (spec.k as usize, spec.v as usize);
    let map = |shape: Vec<usize>, x: &[f64]| tensor(shape, &x.iter().map(f).collect::<Vec<_>>());
    let state = map(vec![n, h, k, v], &inputs.h0)?;
    let dht = map(vec![n, h, k, v], &inputs.dht)?;
    toks.reference(
        (
            &map(vec![b, t, h, k], &inputs.q)?,
            &map(vec![b, t, h, k], &inputs.k)?,
            &map(vec![b, t, h, v], &inputs.v)?,
        ),
        params,
        case.reference_chunk,
        case.with_h0.then_some(&state),
        &map(vec![b, t, h, v], &inputs.d_o)?,
        case.with_dht.then_some(&dht),
    )
}

/// The launch of one kernel, its arguments filled by name.
fn build_launch(
    spec: &KernelSpec,
    (toks, h): (&Tokens, usize),
    inputs: &Inputs,
    (state_in, out_len): (Option<&Vec<f64>>, usize),
    log2: &[f32],
    case: BackwardCase,
) -> Result<Launch, String> {
    let geometry =
        launch_geometry(spec, toks.states as u32, h as u32).map_err(|e| e.to_string())?;
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
            "p_t" => Param::U32(toks.t as u32),
            "p_cu_seqlens" => {
                let cu = toks.cu.as_ref().ok_or("a varlen op needs a packed case")?;
                let bounds: Vec<u32> = cu.as_slice().iter().map(|&x| x as u32).collect();
                Param::Buffer(Buffer::from_u32(&bounds))
            }
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
