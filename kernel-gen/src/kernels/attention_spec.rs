//! What the attention decode baseline serves and the numbers both of its passes share: the
//! spec check, the layout of a split's partial row, and the combine pass's thread mapping.
//! The split pass ([`super::attention_decode`]), its launch plan ([`super::attention_plan`])
//! and the combine ([`super::attention_combine`]) import this file; it imports none of them.
//!
//! Head dims: any K in 1..=[`MAX_K`] and V in 1..=[`MAX_V`]. A partial row holds
//! [`PARTIAL_HEADER`] words (m, l, two pads) and then õ over V rounded up to a multiple of
//! four ([`padded_v`]), so every row and every õ quad starts 16-byte aligned whatever V is.

use crate::GenError;
use crate::spec::{KernelOp, KernelSpec};

/// Largest key/query head dim served (any K in 1..=MAX_K).
pub const MAX_K: u32 = 256;
/// Largest value head dim served (any V in 1..=MAX_V).
pub const MAX_V: u32 = 512;
/// f32 words before each split's õ in the partials: m, l and two pad words.
pub const PARTIAL_HEADER: u32 = 4;
/// The running max of a lane group that has seen no token: finite, so max − max is 0.
pub(crate) const NO_SCORE: f32 = f32::MIN;

/// The split pass's parameters in launch order (the module table of `attention_decode`).
pub(crate) const SPLIT_PARAMS: [&str; 8] = [
    "p_q",
    "p_k_cache",
    "p_v_cache",
    "p_o",
    "p_partial",
    "p_context",
    "p_split_len",
    "p_scale",
];
/// The combine pass's parameters in launch order (the module table of `attention_combine`).
pub(crate) const COMBINE_PARAMS: [&str; 3] = ["p_partial", "p_o", "p_splits"];

/// V rounded up to a multiple of 4: the õ words of a partial row and the f32 columns of a
/// warp's row in the split pass's shared merge buffer (columns past V hold zeros).
pub fn padded_v(v: u32) -> u32 {
    v.next_multiple_of(4)
}

/// f32 words of one split's partial row: `PARTIAL_HEADER + padded_v(V)`.
pub fn partial_row_floats(spec: &KernelSpec) -> u32 {
    PARTIAL_HEADER + padded_v(spec.v)
}

/// The combine pass's mapping: (threads, output columns per thread). Thread t owns columns
/// `cols·t..cols·t+cols`; threads whose columns start at or past V (only when the padded V
/// is not a multiple of 128 or 64) mask their loads and stores.
pub(crate) fn combine_mapping(spec: &KernelSpec) -> (u32, u32) {
    let vp = padded_v(spec.v);
    if vp.is_multiple_of(128) {
        (vp / 4, 4)
    } else if vp == 64 {
        (32, 2)
    } else {
        ((vp / 4).next_multiple_of(32), 4)
    }
}

/// Threads of the combine pass: a whole number of warps, 2 or 4 output columns each.
pub fn combine_threads(spec: &KernelSpec) -> u32 {
    combine_mapping(spec).0
}

/// Check that the attention generators serve `spec` (either pass).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for another op, K outside 1..=256 or V outside 1..=512, a
/// chunk, a named gamma set, or a tile other than threads ∈ {64, …, 512} (a power of two,
/// 4·threads ≥ V) and rows_per_step ∈ {1, 2, 4}.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    spec.check_op(
        &[KernelOp::AttentionDecode, KernelOp::AttentionCombine],
        "the attention generators emit attention_decode and attention_combine only",
    )?;
    spec.check_head_dims((MAX_K, MAX_V), "attention decode")?;
    spec.check_no_chunk_no_decays("attention decode")?;
    spec.check_column_threads(512)?;
    spec.check_rows_per_step(&[1, 2, 4], "tokens per lane group per step: 1, 2 or 4")
}
