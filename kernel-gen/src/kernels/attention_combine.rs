//! The combine pass of the attention decode baseline: merges the per-split partials
//! (m_s, l_s, õ_s) that [`super::attention_decode`] wrote into o = Σ 2^(m_s−M) õ_s /
//! Σ 2^(m_s−M) l_s, M the running max, in f32, then rounds to the output dtype.
//!
//! Parameters, in launch order:
//!
//! | # | name        | type   | meaning                                          |
//! |---|-------------|--------|--------------------------------------------------|
//! | 0 | `p_partial` | `.u64` | partials f32 `[N,H,splits,4+V']` (m, l, pad, õ)  |
//! | 1 | `p_o`       | `.u64` | o `[N,H,V]` in the spec's dtype (written)        |
//! | 2 | `p_splits`  | `.u32` | splits per (row, head), as the split pass ran    |
//!
//! V' is V rounded up to a multiple of 4 (the partial rows stay 16-byte aligned for any V).
//! Mapping: grid `(1, H, N)`, block `(max(32, V'/4), 1, 1)` rounded up to whole warps (V' =
//! 64: 32 threads of 2 columns); thread t owns 2 or 4 consecutive columns, threads past V'
//! load nothing, and columns past V are not stored (o in accesses of 4, 2 or 1 elements, as
//! V's alignment allows). Lane i of every warp loads the (m, l) of split `base + i` once and
//! `shfl.idx` hands it to the warp, so each partial word is read once per warp at most; the
//! õ rows of eight splits are loaded together before they are merged (a loop of one split
//! at a time would wait a full memory latency per split).

use super::attention_layout::{head_row_thread, load_piece_words_masked, store_columns};
use super::attention_spec::{
    COMBINE_PARAMS, NO_SCORE, PARTIAL_HEADER, combine_mapping, padded_v, partial_row_floats,
    validate,
};
use crate::GenError;
use crate::dsl::{Address, Cmp, KernelBuilder, Reg, ShflMode, Ty};
use crate::math::kernel_head::start_kernel;
use crate::spec::{KernelOp, KernelSpec};
use retention_core::Dtype;

/// The kernel's title line.
const TITLE: &str = "softmax attention decode, combine pass";
/// What the kernel computes, as its header says.
const FORMULA: &str = "o = sum_s 2^(m_s - M) o~_s / sum_s 2^(m_s - M) l_s";

/// Splits merged per loop trip: their loads are all in flight before the first merge.
const UNROLL: u32 = 8;

/// Emit the combine pass for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`] or for the split-pass op;
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    spec.check_op(
        &[KernelOp::AttentionCombine],
        "this generator emits the combine pass (attention_combine)",
    )?;
    let vd = spec.v;
    let (threads, cols) = combine_mapping(spec); // cols: 2 or 4
    // Threads whose columns start at or past the padded V (a V that fills no whole warp).
    let idle_threads = threads * cols > padded_v(vd);
    let esize = spec.dtype.size_bytes() as u32;
    let row_bytes = partial_row_floats(spec) * 4;

    let mut kb = start_kernel(spec, TITLE, FORMULA, (threads, false));
    let [p_partial, p_o, p_splits] = kb.params(COMBINE_PARAMS, &[("p_splits", Ty::U32)]);

    kb.comment("one CTA per (head h = ctaid.y, row n = ctaid.z)");
    let (h, heads, n, t) = head_row_thread(&mut kb);
    let lane = kb.and(t, 31u32);
    let nh = kb.mad_lo(n, heads, h);
    let splits = kb.ld_param(&p_splits);
    let first_row = kb.mul_lo(nh, splits);
    let partial = kb.global_ptr(&p_partial);
    let g_rows = kb.mad_wide(first_row, row_bytes, partial); // (splits, 4 + V')
    let t_cols = kb.mul_wide(t, cols * 4);
    let g_cols = kb.add(g_rows, t_cols);
    let t_ok = idle_threads.then(|| kb.setp(Cmp::Lt, t, padded_v(vd) / cols));

    let big_m = kb.mov(Ty::F32, NO_SCORE);
    let l_sum = kb.mov(Ty::F32, 0.0f32);
    let acc: Vec<Reg> = (0..cols).map(|_| kb.mov(Ty::F32, 0.0f32)).collect();
    kb.for_range(0u32, splits, 32, |kb, base| {
        kb.comment("lane i fetches (m, l) of split base + i");
        let mine = kb.add(base, lane);
        let valid = kb.setp(Cmp::Lt, mine, splits);
        let ml_at = kb.mad_wide(mine, row_bytes, g_rows);
        let ml = load_piece_words_masked(kb, Dtype::F32, 8, Address::reg(ml_at, 0), valid);
        let left = kb.sub(splits, base);
        let count = kb.min(left, 32u32);
        let row_at = kb.mad_wide(base, row_bytes, g_cols);
        // Lanes past the last split must never win the max.
        let m_lane = kb.selp(ml[0], NO_SCORE, valid);
        kb.for_range(0u32, count, UNROLL, |kb, i| {
            kb.comment(format!(
                "{UNROLL} splits at a time: every load first, then the merges"
            ));
            let group: Vec<(Reg, Reg, Vec<Reg>)> = (0..UNROLL)
                .map(|j| {
                    let idx = kb.add(i, j);
                    let inside = kb.setp(Cmp::Lt, idx, count);
                    let src = kb.min(idx, 31u32);
                    let m_j = kb.warp_shfl(ShflMode::Idx, m_lane, src, 0x1fu32, u32::MAX);
                    let l_j = kb.warp_shfl(ShflMode::Idx, ml[1], src, 0x1fu32, u32::MAX);
                    let m_j = kb.selp(m_j, NO_SCORE, inside);
                    let l_j = kb.selp(l_j, 0.0f32, inside);
                    let at = Address::reg(row_at, i64::from(j * row_bytes + PARTIAL_HEADER * 4));
                    let load_ok = match t_ok {
                        Some(ok) => kb.and(inside, ok),
                        None => inside,
                    };
                    let o_j = load_piece_words_masked(kb, Dtype::F32, cols * 4, at, load_ok);
                    (m_j, l_j, o_j)
                })
                .collect();
            for (m_j, l_j, o_j) in group {
                let m = kb.max(big_m, m_j);
                let a = kb.sub(big_m, m);
                let a = kb.ex2(a, true);
                let b = kb.sub(m_j, m);
                let b = kb.ex2(b, true);
                let l = kb.mul(l_sum, a);
                kb.fma_into(l_sum, l_j, b, l);
                for (&x, &y) in acc.iter().zip(&o_j) {
                    let xa = kb.mul(x, a);
                    kb.fma_into(x, y, b, xa);
                }
                kb.assign(big_m, m);
            }
            let next = kb.add(row_at, u64::from(UNROLL * row_bytes));
            kb.assign(row_at, next);
        });
    });

    kb.comment("o = o~ / l in the output dtype");
    let inv = kb.div(1.0f32, l_sum);
    let o_vals: Vec<Reg> = acc.iter().map(|&x| kb.mul(x, inv)).collect();
    let o = kb.global_ptr(&p_o);
    let o_row = kb.mad_wide(nh, vd * esize, o);
    let o_col = kb.mul_wide(t, cols * esize);
    let o_at = kb.add(o_row, o_col);
    let c0 = |kb: &mut KernelBuilder| kb.mul_lo(t, cols);
    let o_at = Address::reg(o_at, 0);
    store_columns(&mut kb, spec.dtype, o_at, &o_vals, c0, (vd, idle_threads));
    kb.ret();
    kb.finish()
}
