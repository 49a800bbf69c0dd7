//! Scores S = Q Kᵀ ⊙ D on tensor cores: the causal decay mask `D[i][j]` = γ^(i−j) (i ≥ j, else
//! 0) applied to a warp's f32 score fragments, reading γ^d from the CTA's shared decay table.

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
        AccTileF32 {
            frags: sacc
                .frags
                .iter()
                .enumerate()
                .map(|(nt, f)| {
                    std::array::from_fn(|e| {
                        let dv = if e < 2 { self.d_lo } else { self.d_hi };
                        let thr = 16 + col0 + 8 * nt as u32 + (e as u32 & 1);
                        let causal = kb.setp(Cmp::Ge, dv, thr);
                        let cl = kb.max(dv, thr);
                        let cl4 = kb.shl(cl, 2u32);
                        let at = kb.add(base, cl4);
                        let dec = kb.ld(
                            Space::Shared,
                            Ty::F32,
                            Address::reg(at, i64::from(decay) - i64::from(4 * thr)),
                        );
                        let val = kb.mul(f[e], dec);
                        kb.selp(val, 0.0f32, causal)
                    })
                })
                .collect(),
        }
    }
}
