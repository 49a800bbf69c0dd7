//! How the attention decode baseline is launched: the split plan (how many CTAs share one
//! head's context), both passes' grids, and the parameter tables (documented in
//! [`super::attention_decode`] and [`super::attention_combine`]).

use super::attention_layout::LaneLayout;
use super::attention_spec::{
    COMBINE_PARAMS, SPLIT_PARAMS, combine_threads, partial_row_floats, validate,
};
use crate::spec::{KernelOp, KernelSpec};
use crate::{Arch, GenError, GenResult, LaunchGeometry};

/// Tokens one CTA of the split pass reads per step (a power of two).
pub fn tokens_per_step(spec: &KernelSpec) -> u32 {
    let groups = LaneLayout::new(spec).groups_per_warp();
    spec.tile.threads / 32 * groups * spec.tile.rows_per_step
}

/// How to run one attention decode: the split pass, then (when `splits > 1`) the combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDecodePlan {
    /// Tokens per split (`p_split_len`).
    pub split_len: u32,
    /// ⌈L / split_len⌉: the split pass's grid x and the combine's `p_splits`.
    pub splits: u32,
    /// The split pass's launch: grid `(splits, H, N)`.
    pub split: LaunchGeometry,
    /// The combine pass's launch, grid `(1, H, N)`; `None` with one split (the split pass
    /// writes o itself).
    pub combine: Option<LaunchGeometry>,
    /// f32 elements of the partials buffer, `N·H·splits·(4 + V rounded up to a multiple of
    /// 4)`; 0 with one split (then
    /// `p_partial` is not touched and may be any value).
    pub partial_floats: u64,
}

/// SMs of the GPU an arch's catalog is tuned for (A100, H100).
const fn sm_count(arch: Arch) -> u32 {
    match arch {
        Arch::Sm80 => 108,
        Arch::Sm90 => 132,
    }
}

/// Fewest tokens a planned split gets (when the context has them): shorter splits spend
/// more on each CTA's fixed work (q staging, merges, the partial row) than they gain.
pub const MIN_PLANNED_SPLIT: u32 = 256;

/// The launch plan for `rows` sequences of `heads` heads over a `context`-token cache: at
/// most two CTAs per SM of the arch's GPU (N·H CTAs when that is already more), splits of at
/// least [`MIN_PLANNED_SPLIT`] tokens, each a whole number of steps (the rule that measured
/// fastest on an H100).
///
/// # Errors
/// As [`plan_with_split_len`].
pub fn plan(
    spec: &KernelSpec,
    rows: u32,
    heads: u32,
    context: u32,
) -> Result<AttentionDecodePlan, GenError> {
    validate(spec)?;
    let step = tokens_per_step(spec);
    let cells = (u64::from(rows) * u64::from(heads)).max(1);
    let target = u64::from(2 * sm_count(spec.arch));
    let most = u64::from((context / MIN_PLANNED_SPLIT).max(1));
    // Round down: one CTA past a full wave would cost a whole extra wave.
    let splits = (target / cells).clamp(1, most) as u32;
    let whole_steps =
        u64::from(context.div_ceil(splits)).div_ceil(u64::from(step)) * u64::from(step);
    let split_len = whole_steps.min(u64::from(u32::MAX)) as u32;
    plan_with_split_len(spec, rows, heads, context, split_len)
}

/// The launch plan with a chosen split length (any length ≥ 1 is correct; multiples of
/// [`tokens_per_step`] waste no lanes).
///
/// # Errors
/// [`GenError::Launch`] when rows, heads, context or split_len is 0, rows or heads exceed
/// 65535 (grid z and y), N·H·L or the partials' size exceeds 2³² − 1 (32-bit index math);
/// spec errors as [`validate`].
pub fn plan_with_split_len(
    spec: &KernelSpec,
    rows: u32,
    heads: u32,
    context: u32,
    split_len: u32,
) -> Result<AttentionDecodePlan, GenError> {
    validate(spec)?;
    if rows == 0 || heads == 0 || context == 0 || split_len == 0 {
        return Err(GenError::Launch(format!(
            "rows {rows}, heads {heads}, context {context} and split_len {split_len} must be \
             at least 1"
        )));
    }
    if rows > 65535 || heads > 65535 {
        return Err(GenError::Launch(format!(
            "grid (splits, {heads}, {rows}) exceeds the CUDA grid limits (y, z <= 65535)"
        )));
    }
    let cells = u64::from(rows) * u64::from(heads);
    if cells * u64::from(context) > u64::from(u32::MAX) {
        return Err(GenError::Launch(format!(
            "N·H·L = {} cached rows exceed 2^32 - 1",
            cells * u64::from(context)
        )));
    }
    let splits = context.div_ceil(split_len);
    let partial_floats = if splits > 1 {
        cells * u64::from(splits) * u64::from(partial_row_floats(spec))
    } else {
        0
    };
    if partial_floats > u64::from(u32::MAX) {
        return Err(GenError::Launch(format!(
            "{partial_floats} partial floats exceed 2^32 - 1"
        )));
    }
    Ok(AttentionDecodePlan {
        split_len,
        splits,
        split: LaunchGeometry {
            grid: [splits, heads, rows],
            block: [spec.tile.threads, 1, 1],
            dynamic_smem_bytes: 0,
        },
        combine: (splits > 1).then(|| LaunchGeometry {
            grid: [1, heads, rows],
            block: [combine_threads(spec), 1, 1],
            dynamic_smem_bytes: 0,
        }),
        partial_floats,
    })
}

/// The launch of either pass with one split per (row, head): grid `(1, H, N)` (the split
/// pass then needs `p_split_len >= L` and writes o directly). Split launches come from
/// [`plan`], which knows the context length.
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is 0 or above 65535; spec errors as [`validate`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    let p = plan_with_split_len(spec, rows, heads, 1, 1)?;
    Ok(match spec.op {
        KernelOp::AttentionCombine => LaunchGeometry {
            grid: [1, heads, rows],
            block: [combine_threads(spec), 1, 1],
            dynamic_smem_bytes: 0,
        },
        _ => p.split,
    })
}

/// Parameter names in launch order (the module tables of this file and of the combine).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    match spec.op {
        KernelOp::AttentionCombine => COMBINE_PARAMS.to_vec(),
        _ => SPLIT_PARAMS.to_vec(),
    }
}
