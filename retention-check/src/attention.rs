//! Run the attention decode baseline's two catalog kernels (split pass, then combine) in the
//! emulator and hold o to the f64 reference (`reference::attention_decode` on the
//! dtype-rounded inputs): f32 ≤ 1e-5 max relative error, f16/bf16 ≤ 5e-3 relative RMSE.
//!
//! Contexts checked: L = 1 and L = 7 (one split, o written by the split pass; L = 7 with
//! logits large enough that exp would overflow f32 without the running max), a context of two and
//! a half CTA steps cut into one split per step (the combine runs; the last split is
//! partial), the same context with a split length that is not a multiple of the CTA's
//! step (a masked step in every split), and 41 splits of 3 tokens (the combine's batches of
//! eight splits and of 32 per warp-wide (m, l) fetch both wrap, the last one partial).
//!
//! Arguments are filled by the names `kernel_gen::param_names` gives, so a kernel whose
//! parameters this check does not know is reported, never launched with guesses.

use kernel_gen::emu::{Buffer, Dtype as EmuDtype, Launch, Param};

use kernel_gen::kernels::attention_decode::{
    AttentionDecodePlan, plan, plan_with_split_len, tokens_per_step,
};
use kernel_gen::{KernelOp, KernelSpec, param_names};
use retention_core::{Dtype, HostTensor, SplitMix64};
use retention_kernels::reference;
use retention_runtime::launch_target::{LaunchReport, LaunchTarget};

use crate::io::{EmuCheck, emu_dtype, input_buffer, output_values, unwritten_shared_reads};

/// Scale applied to q (not the default, so a kernel that ignores it fails).
const SCALE: f64 = 0.41;
/// s·√K of the large-logit case: logits with a standard deviation of 40 (q·k of uniform
/// inputs has σ = √K/3), so exp of the largest overflows f32 (beyond 88.7) in many draws
/// without the running max. Larger logits would only measure the conditioning of f32 scores
/// (an f32 score of magnitude x carries an absolute error near x·2⁻²³).
const HUGE_LOGIT_SCALE: f64 = 120.0;

/// (rows, heads) a spec is exercised with.
pub fn problem_size(_spec: &KernelSpec) -> (usize, usize) {
    (2, 2)
}

/// One checked case: context, split length (`None`: as [`plan`] chooses) and scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// L, cached tokens.
    pub context: u32,
    /// Tokens per split, or the plan's choice.
    pub split_len: Option<u32>,
    /// s.
    pub scale: f64,
}

/// The cases of [`check`] for `spec`.
pub fn cases(spec: &KernelSpec) -> Vec<Case> {
    let step = tokens_per_step(spec);
    let long = 2 * step + step / 2 + 3;
    vec![
        Case {
            context: 1,
            split_len: None,
            scale: SCALE,
        },
        Case {
            context: 7,
            split_len: None,
            scale: HUGE_LOGIT_SCALE / f64::from(spec.k).sqrt(),
        },
        Case {
            context: long,
            split_len: Some(step),
            scale: SCALE,
        },
        Case {
            context: long,
            split_len: Some(step / 2 + 5),
            scale: SCALE,
        },
        Case {
            context: 41 * 3 - 1,
            split_len: Some(3),
            scale: SCALE,
        },
    ]
}

/// Emulated work of [`check`] (cached elements read over every case): decides whether a
/// sampled run emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let (n, h) = problem_size(spec);
    let tokens: usize = cases(spec).iter().map(|c| c.context as usize).sum();
    n * h * tokens * (spec.k + spec.v) as usize
}

/// What one emulated attention decode gave.
#[derive(Debug, Clone)]
pub struct AttentionRun {
    /// The launch plan used.
    pub plan: AttentionDecodePlan,
    /// o's error against the reference (max relative for f32, relative RMSE for 16-bit).
    pub o_error: f64,
    /// The split pass's report.
    pub split: LaunchReport,
    /// The combine pass's report, when it ran.
    pub combine: Option<LaunchReport>,
}

/// Run `spec`'s split pass and combine (as planned) on one case, against the reference.
///
/// # Errors
/// A one-line reason: the plan, an unknown parameter, an emulator error (out of bounds, race,
/// unsupported instruction), or a reference failure.
pub fn run_case(
    split_spec: &KernelSpec,
    split_module: &dyn LaunchTarget,
    combine_module: &dyn LaunchTarget,
    (n, h): (usize, usize),
    case: Case,
    seed: u64,
) -> Result<AttentionRun, String> {
    let (k, v, l) = (
        split_spec.k as usize,
        split_spec.v as usize,
        case.context as usize,
    );
    let plan = match case.split_len {
        None => plan(split_spec, n as u32, h as u32, case.context),
        Some(s) => plan_with_split_len(split_spec, n as u32, h as u32, case.context, s),
    }
    .map_err(|e| e.to_string())?;
    let mut rng = SplitMix64::new(seed);
    let mut round = |len: usize| {
        rng.vec(len)
            .into_iter()
            .map(|x| split_spec.dtype.round(x))
            .collect::<Vec<_>>()
    };
    let (q, kc, vc) = (round(n * h * k), round(n * h * l * k), round(n * h * l * v));
    let t = |shape: Vec<usize>, d: &[f64]| {
        HostTensor::new(shape, d.to_vec()).map_err(|e| e.to_string())
    };
    let want = reference::attention_decode(
        &t(vec![n, h, k], &q)?,
        &t(vec![n, h, l, k], &kc)?,
        &t(vec![n, h, l, v], &vc)?,
        Some(case.scale),
    )
    .map_err(|e| e.to_string())?;

    let partial = Buffer::zeros(EmuDtype::F32, (plan.partial_floats as usize).max(1)).output();
    let out = Buffer::zeros(emu_dtype(split_spec.dtype), n * h * v).output();
    let g = plan.split;
    let mut split = Launch::new(split_spec.entry(), g.grid, g.block).dynamic_shared(0);
    for name in param_names(split_spec) {
        split = split.arg(match name {
            "p_q" => Param::Buffer(input_buffer(split_spec.dtype, &q)),
            "p_k_cache" => Param::Buffer(input_buffer(split_spec.dtype, &kc)),
            "p_v_cache" => Param::Buffer(input_buffer(split_spec.dtype, &vc)),
            "p_o" => Param::Buffer(out.clone()),
            "p_partial" => Param::Buffer(partial.clone()),
            "p_context" => Param::U32(case.context),
            "p_split_len" => Param::U32(plan.split_len),
            "p_scale" => Param::F32(case.scale as f32),
            other => return Err(format!("cannot fill attention parameter `{other}`")),
        });
    }
    let split_report = split_module
        .execute(split_spec, &mut split)
        .map_err(|e| format!("split pass: {e}"))?;
    let buffer = |launch: &Launch, name: &str, names: &[&str]| -> Result<Buffer, String> {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| launch.buffer(i))
            .cloned()
            .ok_or_else(|| format!("no `{name}` buffer"))
    };
    let split_names = param_names(split_spec);
    let (o_buf, combine_report) = match plan.combine {
        None => (buffer(&split, "p_o", &split_names)?, None),
        Some(cg) => {
            let combine_spec = split_spec.attention_combine();
            let names = param_names(&combine_spec);
            let mut combine = Launch::new(combine_spec.entry(), cg.grid, cg.block);
            for name in &names {
                combine = combine.arg(match *name {
                    "p_partial" => Param::Buffer(buffer(&split, "p_partial", &split_names)?),
                    "p_o" => Param::Buffer(out.clone()),
                    "p_splits" => Param::U32(plan.splits),
                    other => return Err(format!("cannot fill combine parameter `{other}`")),
                });
            }
            let report = combine_module
                .execute(&combine_spec, &mut combine)
                .map_err(|e| format!("combine pass: {e}"))?;
            (buffer(&combine, "p_o", &names)?, Some(report))
        }
    };
    let got = output_values(split_spec.dtype, &o_buf);
    let o_error = match split_spec.dtype {
        Dtype::F32 => reference::max_rel_diff(&got, want.data()),
        Dtype::F16 | Dtype::Bf16 => reference::rel_rmse(&got, want.data()),
    };
    Ok(AttentionRun {
        plan,
        o_error,
        split: split_report,
        combine: combine_report,
    })
}

/// Run `spec` (either attention op; the other pass is emitted here) on every case of
/// [`cases`] against the reference.
///
/// # Errors
/// As [`run_case`]. Results off the reference are not errors here: see
/// [`EmuCheck::failure`].
pub fn check(spec: &KernelSpec, module: &dyn LaunchTarget, seed: u64) -> Result<EmuCheck, String> {
    if !matches!(
        spec.op,
        KernelOp::AttentionDecode | KernelOp::AttentionCombine
    ) {
        return Err(format!("{} is not an attention op", spec.op.name()));
    }
    // Both passes run on the same target (an emulator module generates the other pass's
    // module on demand; a GPU loads it).
    let split_spec = KernelSpec {
        op: KernelOp::AttentionDecode,
        ..*spec
    };
    let (split_module, combine_module) = (module, module);
    let mut out = EmuCheck {
        o_error: 0.0,
        state_error: 0.0,
        report: None,
        unwritten_shared_reads: 0,
    };
    for (i, case) in cases(&split_spec).into_iter().enumerate() {
        let run = run_case(
            &split_spec,
            split_module,
            combine_module,
            problem_size(spec),
            case,
            seed + i as u64,
        )
        .map_err(|e| format!("context {}: {e}", case.context))?;
        out.o_error = out.o_error.max(if run.o_error.is_nan() {
            f64::INFINITY
        } else {
            run.o_error
        });
        out.unwritten_shared_reads += unwritten_shared_reads(&run.split)
            + run.combine.as_ref().map_or(0, unwritten_shared_reads);
        out.report = Some(if spec.op == KernelOp::AttentionCombine {
            run.combine.unwrap_or(run.split)
        } else {
            run.split
        });
    }
    Ok(out)
}
