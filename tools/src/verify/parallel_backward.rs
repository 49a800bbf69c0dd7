//! The parallel backward in `retention verify` (ARCHITECTURE §7): one problem per spec for
//! `retention_check::parallel_backward` (which runs all four passes of the spec's shape), its
//! emulated work, and its verdict folded into one row.

use kernel_gen::{GammaSet, KernelSpec};
use retention_check::EmuCheck;
use retention_check::parallel_backward::{self, Problem};
use retention_runtime::launch_target::LaunchTarget;

/// Heads of the problem under runtime γ (a named gamma set fixes its own).
const RUNTIME_HEADS: usize = 3;
/// Tokens: one full tile of the catalog's 32 and a partial one.
const TOKENS: usize = 37;
/// A scale that is not the default K^-1/2, so a kernel that ignores it fails.
const SCALE: f64 = 0.29;

/// The problem verify runs `spec` with: one row, the spec's heads, T = 37.
pub fn problem(spec: &KernelSpec) -> Problem {
    let heads = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => RUNTIME_HEADS,
    };
    Problem {
        batch: 1,
        heads,
        tokens: TOKENS,
        scale: SCALE,
    }
}

/// Emulated work (rows × heads × T × K × V, four passes): decides whether a sampled run
/// emulates a spec.
pub fn cost(spec: &KernelSpec) -> usize {
    let p = problem(spec);
    4 * p.batch * p.heads * p.tokens * spec.k as usize * spec.v as usize
}

/// Run the four passes of `spec`'s shape on `target`: the check (output error the worst of
/// dq, dk, dv; state error d log γ's, relative to Σ|terms|; the d log γ pass's report) and
/// the checker's own verdict (which also counts unwritten shared reads in f32).
///
/// # Errors
/// The checker's one-line reason (plan, parameter, emulator fault, reference).
pub fn check(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    seed: u64,
) -> Result<(EmuCheck, Option<String>), String> {
    let got = parallel_backward::check(spec, target, problem(spec), seed)?;
    let failure = got.failure(spec.dtype);
    let passes = got.passes();
    let check = EmuCheck {
        o_error: passes[..3].iter().map(|c| c.o_error).fold(0.0, f64::max),
        state_error: got.dlog_gamma.o_error,
        unwritten_shared_reads: passes.iter().map(|c| c.unwritten_shared_reads).sum(),
        report: got.dlog_gamma.report.clone(),
    };
    Ok((check, failure))
}
