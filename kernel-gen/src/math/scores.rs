//! Scores S = Q Kᵀ ⊙ D on tensor cores: the causal decay mask `D[i][j]` = γ^(i−j) (i ≥ j, else
//! 0) applied to a warp's f32 score fragments, reading γ^d from the CTA's shared decay table,
//! and the same scores on the FMA units ([`causal_scores_piece_fma`]).

use crate::blocks::decay::table_entry;
use crate::blocks::fma::{Piece, product_piece, store_piece, zero_acc};
use crate::dsl::tiles::AccTileF32;
use crate::dsl::{Address, Cmp, KernelBuilder, Reg, Space, Ty};

/// A lane's distance from the diagonal: `i + 16 − 2q` for its two accumulator rows i (row
/// `d1` = i0 + g and `d1 + 8`), kept non-negative by the 16.
pub struct Diagonal {
    d_lo: Reg,
    d_hi: Reg,
}

impl Diagonal {
    /// The lane's distances for accumulator row `d1` (its first row) and `q2` = 2·(lane % 4).
    pub fn new(kb: &mut KernelBuilder, d1: Reg, q2: Reg) -> Self {
        let d2 = kb.add(d1, 16u32);
        let d_lo = kb.sub(d2, q2);
        let d_hi = kb.add(d_lo, 8u32);
        Diagonal { d_lo, d_hi }
    }

    /// `S[i][j] ← (i ≥ j) ? γ^(i−j) S[i][j] : 0` over a 16-row score tile whose columns start
    /// at chunk column `col0`: element e of fragment nt is column j = col0 + 8nt + 2q + (e&1)
    /// of row i = d1 + 8(e>>1), so i − j = diff − (16 + col0 + 8nt + (e&1)).
    pub fn mask(
        &self,
        kb: &mut KernelBuilder,
        sacc: &AccTileF32,
        base: Reg,
        decay: u32,
        col0: u32,
    ) -> AccTileF32 {
        self.masked(kb, sacc, col0, |kb, dv, thr| {
            let causal = kb.setp(Cmp::Ge, dv, thr);
            let cl = kb.max(dv, thr);
            let cl4 = kb.shl(cl, 2u32);
            let at = kb.add(base, cl4);
            let off = i64::from(decay) - i64::from(4 * thr);
            let dec = kb.ld(Space::Shared, Ty::F32, Address::reg(at, off));
            (causal, dec)
        })
    }

    /// The reverse walk's mask, `S[i][j] ← (j ≥ i) ? γ^(j−i) S[i][j] : 0` (the chunkwise
    /// backward's dk and dv): with the same thresholds as [`Self::mask`], j − i = thr − diff.
    /// The decay table is at (shared window base, offset).
    pub fn mask_reverse(
        &self,
        kb: &mut KernelBuilder,
        sacc: &AccTileF32,
        (base, decay): (Reg, u32),
        col0: u32,
    ) -> AccTileF32 {
        self.masked(kb, sacc, col0, |kb, dv, thr| {
            let kept = kb.setp(Cmp::Le, dv, thr);
            let cl = kb.min(dv, thr);
            let top = kb.mov(Ty::U32, thr);
            let d = kb.sub(top, cl);
            let (_, dec) = table_entry(kb, (base, decay), d);
            (kept, dec)
        })
    }

    /// `S[i][j] ← keep ? dec·S[i][j] : 0` (a `selp`, never a product with a mask), where
    /// `rule(kb, diff, thr)` gives (keep, dec) for the element's diagonal distance `diff`
    /// and threshold `thr` = 16 + col0 + 8nt + (e&1).
    fn masked(
        &self,
        kb: &mut KernelBuilder,
        sacc: &AccTileF32,
        col0: u32,
        mut rule: impl FnMut(&mut KernelBuilder, Reg, u32) -> (Reg, Reg),
    ) -> AccTileF32 {
        sacc.map(kb, |kb, nt, e, x| {
            let dv = if e < 2 { self.d_lo } else { self.d_hi };
            let thr = 16 + col0 + 8 * nt as u32 + (e as u32 & 1);
            let (keep, dec) = rule(kb, dv, thr);
            let val = kb.mul(x, dec);
            kb.selp(val, 0.0f32, keep)
        })
    }
}

/// Shared offsets the FMA score pieces read and write: `(sQ)ᵀ [K][rows]`, `Kᵀ [K][rows]`,
/// `Sᵀ [rows][rows]` and the decay table γ^d.
#[derive(Debug, Clone, Copy)]
pub struct FmaScoreTiles {
    /// Offset of `(sQ)ᵀ`.
    pub qt: u32,
    /// Offset of `Kᵀ`.
    pub kt: u32,
    /// Offset of `Sᵀ`.
    pub st: u32,
    /// Offset of the decay table.
    pub decay: u32,
}

/// `Sᵀ[j][i] = (i ≥ j) ? γ^(i−j) (sQ_i · k_j) : 0` for the 4×4 piece `p` of a `rows`×`rows`
/// tile (K = `kd`): i = p.row + r (+ `row_offset`, the query block's first row less the key
/// block's), j = p.col + cc. The mask is a `selp`, never a product, so stale rows cannot leak.
pub fn causal_scores_piece_fma(
    kb: &mut KernelBuilder,
    (base, p): (Reg, &Piece),
    tiles: &FmaScoreTiles,
    (rows, kd): (u32, u32),
    row_offset: Option<Reg>,
) {
    let acc = zero_acc(kb);
    product_piece(
        kb,
        &acc,
        (base, p),
        (tiles.qt, rows * 4),
        (tiles.kt, rows * 4),
        kd,
    );
    // diff = i0 + rows - j0 >= 0; row i0+r, column j0+cc is causal iff diff + r >= rows + cc.
    let shifted = match row_offset {
        Some(off) => {
            let row = kb.add(p.row, off);
            kb.add(row, rows)
        }
        None => kb.add(p.row, rows),
    };
    let diff = kb.sub(shifted, p.col);
    let dst_elem = kb.mad_lo(p.col, rows, p.row);
    let dst_off = kb.shl(dst_elem, 2u32);
    let dst = kb.add(base, dst_off);
    let mut masked = [[acc[0][0]; 4]; 4];
    for r in 0..4u32 {
        let dr = kb.add(diff, r);
        for cc in 0..4u32 {
            let causal = kb.setp(Cmp::Ge, dr, rows + cc);
            let clamped = kb.max(dr, rows + cc);
            let cl4 = kb.shl(clamped, 2u32);
            let at = kb.add(base, cl4);
            let off = i64::from(tiles.decay) - i64::from(4 * (rows + cc));
            let d = kb.ld(Space::Shared, Ty::F32, Address::reg(at, off));
            let val = kb.mul(acc[r as usize][cc as usize], d);
            masked[cc as usize][r as usize] = kb.selp(val, 0.0f32, causal);
        }
    }
    // masked[cc][r] is S^T[j0+cc][i0+r]: one v4 store per column of S.
    let dst = kb.add(dst, tiles.st);
    store_piece(kb, &masked, dst, rows * 4);
}

/// ξ_i = γ^(i+1) for a lane's two accumulator rows i = `d1` and `d1 + 8`, read from the
/// shared decay table at offset `table` from `base`.
pub fn xi_rows(kb: &mut KernelBuilder, (base, table): (Reg, u32), d1: Reg) -> (Reg, Reg) {
    let row4 = kb.shl(d1, 2u32);
    let xi_at = kb.add(base, row4);
    let xi_lo = kb.ld(
        Space::Shared,
        Ty::F32,
        Address::reg(xi_at, i64::from(table + 4)),
    );
    let xi_hi = kb.ld(
        Space::Shared,
        Ty::F32,
        Address::reg(xi_at, i64::from(table + 36)),
    );
    (xi_lo, xi_hi)
}

/// ζ_i = γ^(L−1−i) for a lane's two accumulator rows i = `d1` and `d1 + 8` (the reverse
/// walk's row weights), read from the shared decay table at offset `table` from `base`; rows
/// at or past L (never stored) read γ^0.
pub fn zeta_rows(
    kb: &mut KernelBuilder,
    (base, table): (Reg, u32),
    d1: Reg,
    len: Reg,
) -> (Reg, Reg) {
    let top = kb.sub(len, 1u32);
    let at_row = |kb: &mut KernelBuilder, i: Reg| {
        let m = kb.max(top, i);
        let d = kb.sub(m, i);
        table_entry(kb, (base, table), d).1
    };
    let lo = at_row(kb, d1);
    let d2 = kb.add(d1, 8u32);
    let hi = at_row(kb, d2);
    (lo, hi)
}
