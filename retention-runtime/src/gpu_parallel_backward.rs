//! The parallel backward on a GPU-like device (ARCHITECTURE §7): the four kernels of the
//! `parallel_backward` family (dQ, dK, dV and d log γ passes) as [`KernelLaunch`]es over
//! device tensors, each on its plan's grid, enqueued on one stream. Callers have checked
//! devices, dtypes and shapes; nothing here allocates.

use kernel_gen::{BackwardProblem, KernelOp, KernelPlan, LaunchSize};
use retention_core::{Result, RetentionError, RetentionShape};

use crate::device_launch::{Ctx, bind_common, gamma_set};
use crate::kernel_launch::{Arg, KernelLaunch, Region};

/// The plans of the four passes for shape `s` (dq, dk, dv, d log γ partials).
///
/// # Errors
/// [`RetentionError::Unsupported`]-like kernel errors for a (K, V) no kernel serves, or a
/// grid too large.
pub(crate) fn plans(cx: &Ctx<'_>, s: &RetentionShape) -> Result<[KernelPlan; 4]> {
    let problem = BackwardProblem {
        k: s.dk as u32,
        v: s.dv as u32,
        gammas: gamma_set(cx.gammas),
        dtype: cx.dtype,
        arch: cx.exec.arch(),
    };
    let size = LaunchSize {
        rows: s.batch as u32,
        heads: s.heads as u32,
        tokens: s.seq_len as u32,
    };
    kernel_gen::parallel_backward_plans(problem, size).map_err(RetentionError::from)
}

/// f32 d log γ partials the d log γ pass of `plans` writes, `[B][H][z]`.
pub(crate) fn partial_count(plans: &[KernelPlan; 4]) -> usize {
    kernel_gen::workspace_floats(&plans[3])
}

/// Inputs (q, k, v, dO) and outputs (dq, dk, dv, the d log γ partials) of one backward.
pub(crate) struct BackwardRegions {
    pub q: Region,
    pub k: Region,
    pub v: Region,
    pub d_o: Region,
    pub dq: Region,
    pub dk: Region,
    pub dv: Region,
    /// The d log γ partials, or `None` to skip the d log γ pass.
    pub partials: Option<Region>,
}

/// Enqueue the passes of `plans` (every output element and partial is written; the d log γ
/// pass only when `r.partials` is given).
///
/// # Errors
/// A launch the executor refuses (for the emulator: a bounds or race fault).
pub(crate) fn launch(
    cx: &Ctx<'_>,
    s: &RetentionShape,
    plans: &[KernelPlan; 4],
    r: &BackwardRegions,
) -> Result<()> {
    for plan in plans {
        let g = &plan.geometry;
        let mut l = KernelLaunch::new(plan.spec, g.grid, g.block, g.dynamic_smem_bytes);
        let (output_param, out) = match plan.spec.op {
            KernelOp::ParallelBackwardDq => ("p_dq", &r.dq),
            KernelOp::ParallelBackwardDk => ("p_dk", &r.dk),
            KernelOp::ParallelBackwardDv => ("p_dv", &r.dv),
            _ => match &r.partials {
                Some(p) => ("p_dlog_gamma_partial", p),
                None => continue,
            },
        };
        l.bind("p_q", Arg::Ptr(r.q.clone()))
            .bind("p_k", Arg::Ptr(r.k.clone()))
            .bind("p_v", Arg::Ptr(r.v.clone()))
            .bind("p_do", Arg::Ptr(r.d_o.clone()))
            .bind(output_param, Arg::Ptr(out.clone()));
        bind_common(&mut l, cx, s.heads, s.seq_len);
        cx.exec.launch(&l, cx.stream)?;
    }
    Ok(())
}

/// d log γ_h: the sum of head h's partials over rows and grid z, in f64.
pub(crate) fn sum_partials(partials: &[f32], heads: usize, rows: usize) -> Vec<f32> {
    let z = (partials.len() / (rows * heads).max(1)).max(1);
    let mut sums = vec![0.0f64; heads];
    for (i, chunk) in partials.chunks(z).enumerate() {
        sums[i % heads] += chunk.iter().map(|&x| f64::from(x)).sum::<f64>();
    }
    sums.into_iter().map(|x| x as f32).collect()
}
