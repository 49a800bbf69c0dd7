//! The gated MSR epilogue family (ARCHITECTURE §1, §3): y = RMSNorm_head(o) ⊙ swish(g) and
//! its backward, per (token, head) row of V entries, with no affine weight:
//!
//! ```text
//! r = (mean(o²) + eps)^(−1/2)   (0 where mean(o²) + eps = 0: an all-zero row, eps = 0)
//! n = r·o,  σ = 1/(1 + e^(−g)),  s = g·σ,  y = n ⊙ s                       (forward)
//! dg = dy ⊙ n ⊙ σ(1 + g(1 − σ)),  dn = dy ⊙ s,  do = r·(dn − n·mean(dn ⊙ n))   (backward)
//! ```
//!
//! Mapping (both kernels): one warp per row, `tile.threads / 32` rows per CTA, grid
//! `(⌈rows/warps⌉, 1, 1)` over the `rows = B·T·H` rows of the token-major `[B,T,H,V]` tensors.
//! Lane l owns the columns `32w·j + w·l .. +w` of group j (w = 4 when 4 | V, else 2 when
//! 2 | V, else 4 with scalar accesses), so any V ≤ [`MAX_V`] is served with masked tails:
//! columns past V are never read or written and enter the sums as 0. The two row sums
//! (Σ o² and Σ dn ⊙ n) are warp butterflies; inputs are read once and outputs written once
//! (the algorithmic minimum of global traffic), all math in f32 whatever the dtype.
//!
//! The spec: op `epilogue` or `epilogue_backward`, K = V (the epilogue has no key dim), no
//! chunk, runtime γ (no decays), rows_per_step 1, threads a multiple of 32 in 32..=256
//! (`KernelSpec::epilogue` takes 128: four rows per CTA).

mod backward;
mod forward;
mod row;

use crate::error::{check_span, unsupported};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{KernelOp, KernelSpec};
use crate::{GenError, GenResult, LaunchGeometry};

/// Largest V served.
pub const MAX_V: u32 = 512;

/// Check that this family serves `spec`, before a single instruction is emitted.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field it does not serve.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    spec.check_op(
        &[KernelOp::Epilogue, KernelOp::EpilogueBackward],
        "the epilogue family emits epilogue and epilogue_backward only",
    )?;
    check_span(
        "head dim V",
        spec.v,
        MAX_V,
        format!("the epilogue serves V in 1..={MAX_V}"),
    )?;
    if spec.k != spec.v {
        return Err(unsupported(
            "head dim K",
            spec.k,
            "the epilogue has no key dim: K must equal V",
        ));
    }
    spec.check_no_chunk_no_decays("the epilogue")?;
    spec.check_warp_rows()
}

/// Rows (warps) one CTA serves.
pub fn rows_per_cta(spec: &KernelSpec) -> u32 {
    spec.tile.threads / 32
}

/// The launch over `tokens` token rows (B·T) of `heads` heads: one warp per (token, head).
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for zero sizes or more than 2³² − 1 rows.
pub fn launch_geometry(spec: &KernelSpec, tokens: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    if tokens == 0 || heads == 0 {
        return Err(GenError::Launch(format!(
            "tokens {tokens} and heads {heads} must be at least 1"
        )));
    }
    let rows = u64::from(tokens) * u64::from(heads);
    if rows > u64::from(u32::MAX) {
        return Err(GenError::Launch(format!(
            "{rows} (token, head) rows exceed the epilogue's u32 row index"
        )));
    }
    let ctas = rows.div_ceil(u64::from(rows_per_cta(spec))) as u32;
    Ok(LaunchGeometry {
        grid: [ctas, 1, 1],
        block: [spec.tile.threads, 1, 1],
        dynamic_smem_bytes: 0,
    })
}

/// Parameter names in launch order: the inputs, the outputs, then `p_rows` (B·T·H) and
/// `p_eps` (f32).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    match spec.op {
        KernelOp::EpilogueBackward => {
            vec!["p_o", "p_g", "p_dy", "p_do", "p_dg", "p_rows", "p_eps"]
        }
        _ => vec!["p_o", "p_g", "p_y", "p_rows", "p_eps"],
    }
}

/// The plan of a launch over `size.rows · size.tokens` token rows of `size.heads` heads
/// (tokens taken as 1 when 0): vector path, whole V per warp, no workspace.
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let tokens = size
        .rows
        .checked_mul(size.tokens.max(1))
        .ok_or_else(|| GenError::Launch(format!("{size:?} has more than 2³² − 1 tokens")))?;
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        spec.v,
        launch_geometry(spec, tokens, size.heads)?,
        param_names(spec),
    ))
}

/// The kernel of `spec` (validated first).
///
/// # Errors
/// As [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    match spec.op {
        KernelOp::EpilogueBackward => backward::generate(spec),
        _ => forward::generate(spec),
    }
}
