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

use super::{RowRegs, emit_band, for_each_key_tile, open_kernel, value_slice, walk_query_tiles};
use crate::GenError;
use crate::blocks::fma::{
    Piece, accumulate_shared, for_each_piece, load_piece, product_piece, store_piece,
    store_piece_rows, zero_acc,
};
use crate::blocks::staging::Stager;
use crate::dsl::{Address, Cmp, KernelBuilder, Operand, Reg, Space, Ty};
use crate::math::chunk_tiling::{exact_dims, tile_spec};
use crate::math::fma_chunk::o_rows;
use crate::math::tile_walk::{TilePairLayout, tile_rows};
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention parallel forward";
/// What the kernel computes, as its header says.
const FORMULA: &str =
    "O = 0; for key tiles j <= i: S = (sQ) K_j^T . band ; O += S V_j ; o = O  (f32 tiles on chip)";

/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Stage rows `< len` of a `[B][K]` tile of q (times `scale`) or k, transposed into the f32
/// `[K][B]` array at shared address `dst`.
fn stage_transposed(
    kb: &mut KernelBuilder,
    x: &QueryTiles,
    (src, tok0, len): (Reg, Reg, Reg),
    dst: Reg,
    scale: Option<Reg>,
) {
    let spec = x.spec;
    let stage = &x.stage_k;
    let (kd, bt) = (spec.k, spec.chunk.unwrap_or_default());
    let es = spec.dtype.size_bytes() as u32;
    let tok = kb.add(tok0, stage.row);
    let th = kb.mad_lo(tok, x.row.heads, x.h);
    let col_bytes = kb.mul_wide(stage.col, es);
    let off = kb.mad_wide(th, kd * es, col_bytes);
    let first = kb.add(src, off);
    let elem = kb.mad_lo(stage.col, bt, stage.row);
    let elem_bytes = kb.shl(elem, 2u32);
    let sh = kb.add(dst, elem_bytes);
    // Next rows of the tile are the next columns of its transpose.
    let step = stage.rows_per_round * 4;
    let cols = x.tail.then_some((stage.col, kd));
    stage.stage_f32_transposed(
        kb,
        spec.dtype,
        (first, x.round_steps.0),
        len,
        (sh, step),
        cols,
        (bt * 4, scale),
    );
}

/// The staging positions, tiles and registers the query-tile phases read, fixed per kernel.
struct QueryTiles<'a> {
    spec: &'a KernelSpec,
    /// The tile pair's window: X = (sQ)ᵀ, Y = Kᵀ, Z = V, A = O.
    lay: TilePairLayout,
    stage_k: Stager,
    stage_v: Stager,
    /// Global bytes between staging rounds of k (q) and of v.
    round_steps: (Reg, Reg),
    /// q, k, v, o in global memory.
    ptrs: [Reg; 4],
    /// v's staging column (with this CTA's first column) and its byte offset.
    v_col: (Reg, Reg),
    st_v: Reg,
    /// Shared addresses of (sQ)ᵀ and Kᵀ.
    qt_at: Reg,
    kt_at: Reg,
    my_o: Reg,
    full: Reg,
    t: Reg,
    /// The row's registers (H, log2 γ_h, T, first token, s, window and band addresses).
    row: RowRegs,
    /// Head h and this CTA's first V column.
    h: Reg,
    v_col0: Reg,
    tail: bool,
    /// (K padded, V slice, B).
    dims: (u32, u32, u32),
}

/// Emit the FMA parallel forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (kd, vd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let vs = value_slice(spec);
    let bt = spec.chunk.unwrap_or_default(); // tile rows B
    let es = spec.dtype.size_bytes() as u32;
    let lay = TilePairLayout::new(kd, vs, bt);
    let doc = format!(
        "f32 (sQ)^T [K,B] @{}, K^T [K,B] @{}, V [B,vs] @{}, S^T [B,B] @{}, O [B,vs] @{}, band [2B] @{}",
        lay.xt, lay.yt, lay.z, lay.st, lay.acc, lay.band
    );
    let head = (TITLE, FORMULA, THREADS);
    let (mut kb, open) = open_kernel(spec, head, (lay.total, 16, &doc), vd / vs)?;
    let (params, grid, (h, t)) = (&open.params, &open.grid, (open.h, open.t));
    let row = open.row(&mut kb, lay.band);
    let (heads, seq_len, base) = (row.heads, row.seq_len, row.base);
    let ptrs = [
        kb.global_ptr(&params.q),
        kb.global_ptr(&params.k),
        kb.global_ptr(&params.v),
        kb.global_ptr(&params.o),
    ];
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
    let qt_at = kb.add(base, lay.xt);
    let kt_at = kb.add(base, lay.yt);
    let full = kb.mov(Ty::U32, bt);
    let t16 = kb.shl(t, 4u32);
    let my_o = kb.add(base, t16);
    let x = QueryTiles {
        spec,
        lay,
        stage_k,
        stage_v,
        round_steps: (round_step_k, round_step_v),
        ptrs,
        v_col: (v_col, col_v_bytes),
        st_v,
        qt_at,
        kt_at,
        my_o,
        full,
        t,
        row,
        h,
        v_col0,
        tail: !exact_dims(spec),
        dims: (kd, vs, bt),
    };

    walk_query_tiles(kb, grid, (seq_len, bt), |kb, i| x.query_tile(kb, i))
}

impl QueryTiles<'_> {
    /// Query tile i: (sQ)ᵀ staged once, O = 0; key tiles j = i, i−1, … add S V_j; o = O.
    fn query_tile(&self, kb: &mut KernelBuilder, i: Reg) {
        let (_, vs, bt) = self.dims;
        let (tok_i, len_i) = tile_rows(kb, i, bt, (self.row.seq_len, self.row.tok_row));
        kb.bar_sync(0);
        kb.comment("stage (s q)^T of rows < L; O = 0");
        let q_rows = (self.ptrs[0], tok_i, len_i);
        stage_transposed(kb, self, q_rows, self.qt_at, Some(self.row.scale));
        for r in 0..bt * vs / 4 / THREADS {
            let z: Operand = 0.0f32.into();
            let off = i64::from(self.lay.acc + r * THREADS * 16);
            kb.st_vec(
                Space::Shared,
                Ty::F32,
                Address::reg(self.my_o, off),
                &[z; 4],
            );
        }

        kb.comment("key tiles j = i, i-1, ..., while their decays are not all zero");
        for_each_key_tile(kb, bt, i, self.row.log2_gamma, |kb, j, s| {
            self.key_tile(kb, (j, s), len_i);
        });
        kb.bar_sync(0);

        kb.comment("o rows < L of the tile = O");
        let at = ((self.row.heads, self.h), self.v_col0);
        let (o, ts) = (self.ptrs[3], None);
        let out = o_rows(self.spec, o, (tok_i, len_i), at, ts);
        for_each_piece(kb, self.t, THREADS, bt, vs, |kb, p| {
            let o_at = self.o_piece_at(kb, &p);
            let acc = load_piece(kb, o_at, vs * 4);
            store_piece_rows(kb, &acc, &p, &out);
        });
    }

    /// Shared address of the O piece `p`.
    fn o_piece_at(&self, kb: &mut KernelBuilder, p: &Piece) -> Reg {
        let vs = self.dims.1;
        let o_elem = kb.mad_lo(p.row, vs, p.col);
        let o_off = kb.shl(o_elem, 2u32);
        let o_at = kb.add(self.row.base, o_off);
        kb.add(o_at, self.lay.acc)
    }

    /// Key tile j (s tiles below the diagonal): stage Kᵀ, V and the band; Sᵀ = ((sQ) K_jᵀ ⊙
    /// band)ᵀ; O += S V_j over the tile's valid rows.
    fn key_tile(&self, kb: &mut KernelBuilder, (j, s): (Reg, Reg), len_i: Reg) {
        let (kd, vs, bt) = self.dims;
        let lay = &self.lay;
        kb.bar_sync(0);
        let key0 = kb.mul_lo(j, bt);
        let tok_j = kb.add(self.row.tok_row, key0);
        let is_diag = kb.setp(Cmp::Eq, s, 0u32);
        let len_j = kb.selp(len_i, self.full, is_diag);
        stage_transposed(kb, self, (self.ptrs[1], tok_j, len_j), self.kt_at, None);
        let (v_col, col_v_bytes) = self.v_col;
        let vg = self.spec.v;
        let es = self.spec.dtype.size_bytes() as u32;
        let (heads, h) = (self.row.heads, self.h);
        let v_goff = self
            .stage_v
            .row_offset(kb, tok_j, (heads, h), vg * es, col_v_bytes);
        let v_first = kb.add(self.ptrs[2], v_goff);
        let sh_v = kb.add(self.st_v, lay.z);
        self.stage_v.stage_f32_rows(
            kb,
            self.spec.dtype,
            (v_first, self.round_steps.1),
            len_j,
            (sh_v, self.stage_v.rows_per_round * vs * 4),
            self.tail.then_some((v_col, vg)),
        );
        emit_band(kb, self.row.band, self.t, bt, s, self.row.log2_gamma);
        kb.bar_sync(0);

        kb.comment("S^T[c][r] = ((sQ_r) . k_c) band[r - c + B - 1]");
        for_each_piece(kb, self.t, THREADS, bt, bt, |kb, p| {
            self.band_scores(kb, &p, kd);
        });
        kb.bar_sync(0);

        kb.comment("O[r] += sum_{c < L_j} S^T[c][r] v_c");
        for_each_piece(kb, self.t, THREADS, bt, vs, |kb, p| {
            let o_at = self.o_piece_at(kb, &p);
            let acc = load_piece(kb, o_at, vs * 4);
            let sv = ((lay.st, bt * 4), (lay.z, vs * 4));
            product_piece(kb, &acc, (self.row.base, &p), sv.0, sv.1, len_j);
            store_piece(kb, &acc, o_at, vs * 4);
        });
    }

    /// The piece `p` of Sᵀ[c][r] = ((sQ_r) · k_c) band[r − c + B − 1].
    fn band_scores(&self, kb: &mut KernelBuilder, p: &Piece, kd: u32) {
        let bt = self.dims.2;
        let acc = zero_acc(kb);
        let a_off = kb.shl(p.row, 2u32);
        let a = kb.add(self.qt_at, a_off);
        let b_off = kb.shl(p.col, 2u32);
        let bb = kb.add(self.kt_at, b_off);
        accumulate_shared(kb, &acc, a, bt * 4, bb, bt * 4, kd);
        // band index of (row + r, col + cc) = (row + B − 1 − col) + r − cc.
        let d0 = kb.add(p.row, bt - 1);
        let d = kb.sub(d0, p.col);
        let d4 = kb.shl(d, 2u32);
        let band_at = kb.add(self.row.band, d4);
        let mut decayed = [[acc[0][0]; 4]; 4];
        for r in 0..4i64 {
            for cc in 0..4i64 {
                let dec = kb.ld(Space::Shared, Ty::F32, Address::reg(band_at, 4 * (r - cc)));
                decayed[cc as usize][r as usize] = kb.mul(acc[r as usize][cc as usize], dec);
            }
        }
        let dst_elem = kb.mad_lo(p.col, bt, p.row);
        let dst_off = kb.shl(dst_elem, 2u32);
        let dst = kb.add(self.row.base, dst_off);
        let dst = kb.add(dst, self.lay.st);
        store_piece(kb, &decayed, dst, bt * 4);
    }
}
