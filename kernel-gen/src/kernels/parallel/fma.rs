//! The FMA path of the parallel forward (f32 inputs); math, parameters and grid as
//! [`super`], 256 threads per CTA, every tile f32 in shared memory:
//!
//! ```text
//! query tile i:  (sQ)ᵀ staged once, O = 0                       (O [B][vs] in shared memory)
//!   key tile j:  Sᵀ[c][r] = ((sQ_r) · k_c) · band[r − c + B − 1]    (4×4 pieces per thread)
//!                O[r] += Σ_{c < L_j} Sᵀ[c][r] v_c
//!   o rows < L_i = O
//! ```
//!
//! Rows past T in a partial tile hold stale data; they only reach rows of O that are never
//! written, because the product with V runs over the key tile's valid rows only.

use super::{
    GridZ, ParallelParams, emit_band, for_each_key_tile, for_each_query_tile, value_slice,
};
use crate::GenError;
use crate::blocks::fma::{accumulate_shared, for_each_piece, load_piece, store_piece, zero_acc};
use crate::blocks::global::{row_limit, store_from_f32_masked, store4_from_f32};
use crate::blocks::staging::Stager;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, Space, Sreg, Ty};
use crate::math::chunk_tiling::{exact_dims, tile_spec};
use crate::spec::KernelSpec;

/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Byte offsets of the f32 arrays in the dynamic shared window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FmaLayout {
    /// (s·Q)ᵀ `[K][B]`.
    pub qt: u32,
    /// Kᵀ `[K][B]`.
    pub kt: u32,
    /// V `[B][vs]`.
    pub v: u32,
    /// Sᵀ `[B][B]`: decayed, masked scores, `[c][r]`.
    pub st: u32,
    /// O `[B][vs]`: the query tile's accumulator.
    pub o: u32,
    /// The band table γ^n, 2B − 1 f32 (padded to 2B).
    pub band: u32,
    /// Total bytes.
    pub total: u32,
}

impl FmaLayout {
    /// The layout for head dim `k`, value slice `vs` and tile `b`.
    pub const fn new(k: u32, vs: u32, b: u32) -> Self {
        let qt = 0;
        let kt = qt + k * b * 4;
        let v = kt + k * b * 4;
        let st = v + b * vs * 4;
        let o = st + b * b * 4;
        let band = o + b * vs * 4;
        FmaLayout {
            qt,
            kt,
            v,
            st,
            o,
            band,
            total: band + 2 * b * 4,
        }
    }
}

/// Stage rows `< len` of a `[B][K]` tile of q (times `scale`) or k, transposed into the f32
/// `[K][B]` array at shared address `dst`.
#[allow(clippy::too_many_arguments)]
fn stage_transposed(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    stage: &Stager,
    src: Reg,
    tok0: Reg,
    heads: Reg,
    h: Reg,
    round_step: Reg,
    len: Reg,
    dst: Reg,
    scale: Option<Reg>,
    tail: bool,
) {
    let (kd, bt) = (spec.k, spec.chunk.unwrap_or_default());
    let es = spec.dtype.size_bytes() as u32;
    let tok = kb.add(tok0, stage.row);
    let th = kb.mad_lo(tok, heads, h);
    let col_bytes = kb.mul_wide(stage.col, es);
    let off = kb.mad_wide(th, kd * es, col_bytes);
    let first = kb.add(src, off);
    let elem = kb.mad_lo(stage.col, bt, stage.row);
    let elem_bytes = kb.shl(elem, 2u32);
    let sh = kb.add(dst, elem_bytes);
    // Next rows of the tile are the next columns of its transpose.
    let step = stage.rows_per_round * 4;
    let cols = tail.then_some((stage.col, kd));
    stage.stage_f32(
        kb,
        spec.dtype,
        (first, round_step),
        len,
        (sh, step),
        cols,
        |kb, xs, sh| {
            for (e, &x) in xs.iter().enumerate() {
                let x = match scale {
                    Some(s) => kb.mul(x, s),
                    None => x,
                };
                let off = i64::from(e as u32 * bt * 4);
                kb.st(Space::Shared, Address::reg(sh, off), x);
            }
        },
    );
}

/// Emit the FMA parallel forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
#[allow(clippy::too_many_lines)]
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (kd, vd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let vs = value_slice(spec);
    let bt = spec.chunk.unwrap_or_default(); // tile rows B
    let es = spec.dtype.size_bytes() as u32;
    let lay = FmaLayout::new(kd, vs, bt);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("retention parallel forward: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header("O = 0; for key tiles j <= i: S = (sQ) K_j^T . band ; O += S V_j ; o = O  (f32 tiles on chip)");
    kb.max_threads(THREADS);
    kb.min_ctas_per_sm(1);

    let params = ParallelParams::declare(&mut kb, log2_gammas.is_none());
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 (sQ)^T [K,B] @{}, K^T [K,B] @{}, V [B,vs] @{}, S^T [B,B] @{}, O [B,vs] @{}, band [2B] @{}",
            lay.qt, lay.kt, lay.v, lay.st, lay.o, lay.band
        ),
    );

    kb.comment("CTA (row b = ctaid.x, head h = ctaid.y, value slice and query tiles from ctaid.z)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let grid = GridZ::new(&mut kb, vd / vs);
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) = params.heads_and_log2_gamma(&mut kb, log2_gammas.as_deref(), h);
    let seq_len = kb.ld_param(&params.t);
    let tok_row = kb.mul_lo(b, seq_len);
    let scale = kb.ld_param(&params.scale);
    let base = kb.shared_addr(&smem);
    let band = kb.add(base, lay.band);
    let (q, k, v, o) = (
        kb.global_ptr(&params.q),
        kb.global_ptr(&params.k),
        kb.global_ptr(&params.v),
        kb.global_ptr(&params.o),
    );
    let v_col0 = kb.mul_lo(grid.slice, vs);

    kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
    let stage_k = Stager::new(&mut kb, t, kd, bt, THREADS);
    let stage_v = Stager::new(&mut kb, t, vs, bt, THREADS);
    let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kg * es);
    let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vg * es);
    let v_col = kb.add(stage_v.col, v_col0);
    let col_v_bytes = kb.mul_wide(v_col, es);
    let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
    let v_off = kb.shl(v_elem, 2u32);
    let st_v = kb.add(base, v_off);
    let qt_at = kb.add(base, lay.qt);
    let kt_at = kb.add(base, lay.kt);
    let full = kb.mov(Ty::U32, bt);
    let t16 = kb.shl(t, 4u32);
    let my_o = kb.add(base, t16);
    let tiles = kb.add(seq_len, bt - 1);
    let tiles = kb.shr(tiles, bt.trailing_zeros());

    kb.comment(format!("query tiles of {bt} rows, longest first"));
    for_each_query_tile(&mut kb, &grid, tiles, |kb, i| {
        let row0 = kb.mul_lo(i, bt);
        let remaining = kb.sub(seq_len, row0);
        let len_i = kb.min(remaining, bt);
        let tok_i = kb.add(tok_row, row0);
        kb.bar_sync(0);
        kb.comment("stage (s q)^T of rows < L; O = 0");
        stage_transposed(
            kb,
            spec,
            &stage_k,
            q,
            tok_i,
            heads,
            h,
            round_step_k,
            len_i,
            qt_at,
            Some(scale),
            tail,
        );
        for r in 0..bt * vs / 4 / THREADS {
            let z: Operand = 0.0f32.into();
            let off = i64::from(lay.o + r * THREADS * 16);
            kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_o, off), &[z; 4]);
        }

        kb.comment("key tiles j = i, i-1, ..., while their decays are not all zero");
        for_each_key_tile(kb, bt, i, log2_gamma, |kb, j, s| {
            kb.bar_sync(0);
            let key0 = kb.mul_lo(j, bt);
            let tok_j = kb.add(tok_row, key0);
            let is_diag = kb.setp(Cmp::Eq, s, 0u32);
            let len_j = kb.selp(len_i, full, is_diag);
            stage_transposed(
                kb,
                spec,
                &stage_k,
                k,
                tok_j,
                heads,
                h,
                round_step_k,
                len_j,
                kt_at,
                None,
                tail,
            );
            let tok_v = kb.add(tok_j, stage_v.row);
            let th_v = kb.mad_lo(tok_v, heads, h);
            let v_goff = kb.mad_wide(th_v, vg * es, col_v_bytes);
            let v_first = kb.add(v, v_goff);
            let sh_v = kb.add(st_v, lay.v);
            stage_v.stage_f32(
                kb,
                spec.dtype,
                (v_first, round_step_v),
                len_j,
                (sh_v, stage_v.rows_per_round * vs * 4),
                tail.then_some((v_col, vg)),
                |kb, xs, sh| {
                    let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                    kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
                },
            );
            emit_band(kb, band, t, bt, s, log2_gamma);
            kb.bar_sync(0);

            kb.comment("S^T[c][r] = ((sQ_r) . k_c) band[r - c + B - 1]");
            for_each_piece(kb, t, THREADS, bt, bt, |kb, p| {
                let acc = zero_acc(kb);
                let a_off = kb.shl(p.row, 2u32);
                let a = kb.add(qt_at, a_off);
                let b_off = kb.shl(p.col, 2u32);
                let bb = kb.add(kt_at, b_off);
                accumulate_shared(kb, &acc, a, bt * 4, bb, bt * 4, kd);
                // band index of (row + r, col + cc) = (row + B − 1 − col) + r − cc.
                let d0 = kb.add(p.row, bt - 1);
                let d = kb.sub(d0, p.col);
                let d4 = kb.shl(d, 2u32);
                let band_at = kb.add(band, d4);
                let mut decayed = [[acc[0][0]; 4]; 4];
                for r in 0..4i64 {
                    for cc in 0..4i64 {
                        let dec =
                            kb.ld(Space::Shared, Ty::F32, Address::reg(band_at, 4 * (r - cc)));
                        decayed[cc as usize][r as usize] =
                            kb.mul(acc[r as usize][cc as usize], dec);
                    }
                }
                let dst_elem = kb.mad_lo(p.col, bt, p.row);
                let dst_off = kb.shl(dst_elem, 2u32);
                let dst = kb.add(base, dst_off);
                let dst = kb.add(dst, lay.st);
                store_piece(kb, &decayed, dst, bt * 4);
            });
            kb.bar_sync(0);

            kb.comment("O[r] += sum_{c < L_j} S^T[c][r] v_c");
            for_each_piece(kb, t, THREADS, bt, vs, |kb, p| {
                let o_elem = kb.mad_lo(p.row, vs, p.col);
                let o_off = kb.shl(o_elem, 2u32);
                let o_at = kb.add(base, o_off);
                let o_at = kb.add(o_at, lay.o);
                let acc = load_piece(kb, o_at, vs * 4);
                let a_off = kb.shl(p.row, 2u32);
                let a = kb.add(base, a_off);
                let a = kb.add(a, lay.st);
                let b_off = kb.shl(p.col, 2u32);
                let bb = kb.add(base, b_off);
                let bb = kb.add(bb, lay.v);
                accumulate_shared(kb, &acc, a, bt * 4, bb, vs * 4, len_j);
                store_piece(kb, &acc, o_at, vs * 4);
            });
        });
        kb.bar_sync(0);

        kb.comment("o rows < L of the tile = O");
        for_each_piece(kb, t, THREADS, bt, vs, |kb, p| {
            let o_elem = kb.mad_lo(p.row, vs, p.col);
            let o_off = kb.shl(o_elem, 2u32);
            let o_at = kb.add(base, o_off);
            let o_at = kb.add(o_at, lay.o);
            let acc = load_piece(kb, o_at, vs * 4);
            let tok = kb.add(tok_i, p.row);
            let th = kb.mad_lo(tok, heads, h);
            let col = kb.add(p.col, v_col0);
            let col_bytes = kb.mul_wide(col, es);
            let g_off = kb.mad_wide(th, vg * es, col_bytes);
            let mut at = kb.add(o, g_off);
            let tok_stride = kb.mul_wide(heads, vg * es);
            for (r, row) in acc.iter().enumerate() {
                if r > 0 {
                    at = kb.add(at, tok_stride);
                }
                let inside_row = kb.add(p.row, r as u32);
                let inside = kb.setp(Cmp::Lt, inside_row, len_i);
                if tail {
                    // Rows past L and columns past V are not stored (one guard each).
                    let limit = row_limit(kb, inside, vg);
                    let at = Address::reg(at, 0);
                    store_from_f32_masked(kb, spec.dtype, at, row, col, limit, vg);
                } else {
                    kb.guarded(inside, false, |kb| {
                        store4_from_f32(kb, spec.dtype, Address::reg(at, 0), row);
                    });
                }
            }
        });
    });
    kb.ret();
    kb.finish()
}
