//! The decays of one pair of B-row tiles of the parallel form (ARCHITECTURE §1, parallel):
//! for query tile i and key tile j = i − s (s ≥ 0, the tile step), element (query row r, key
//! row c) decays by γ^(s·B + r − c), which depends only on d = r − c + B − 1. So a tile pair
//! needs one *band* of 2B − 1 decays, each 2^(n·log2 γ) on the relative exponent
//! n = s·B + d − (B − 1) (an exact integer; n < 0 is the causal mask and holds 0), and a walk
//! over tile steps can stop at the first step whose largest decay underflows.

use crate::blocks::decay;
use crate::dsl::{Address, Cmp, KernelBuilder, Reg, Rounding, Space, Ty};

/// Emit the band of tile step `s` (a `.u32`) into the f32 table at shared address `table`:
/// thread `t` (when below 2B − 1) writes `table[t] = γ^(s·B + t − (B − 1))`, or 0 where that
/// exponent is negative. With `weighted`, the entry is n·γ^n instead: the derivative of γ^n
/// with respect to log γ, what d log γ sums.
pub fn emit_band_table(
    kb: &mut KernelBuilder,
    table: Reg,
    t: Reg,
    (b, weighted): (u32, bool),
    s: Reg,
    log2_gamma: Reg,
) {
    let writes = kb.setp(Cmp::Lt, t, 2 * b - 1);
    kb.guarded(writes, false, |kb| {
        let step_rows = kb.mul_lo(s, b);
        let shifted = kb.add(step_rows, t); // n + B − 1, never negative
        let past_mask = kb.setp(Cmp::Ge, shifted, b - 1);
        let n = kb.sub(shifted, b - 1);
        let n_f = kb.cvt(Ty::F32, n, Some(Rounding::Rn));
        let x = kb.mul(n_f, log2_gamma);
        let g = decay::emit_exp2(kb, x);
        let g = if weighted { kb.mul(g, n_f) } else { g };
        let value = kb.selp(g, 0.0f32, past_mask);
        let at = kb.mad_lo(t, 4u32, table);
        kb.st(Space::Shared, Address::reg(at, 0), value);
    });
}

/// A predicate: tile step `s` (a `.u32`) and every later one contribute exact zeros, because
/// their largest decay γ^((s−1)·B + 1) is below 2^−150 (never true for s = 0).
pub fn tile_step_vanishes(kb: &mut KernelBuilder, b: u32, s: Reg, log2_gamma: Reg) -> Reg {
    let step_rows = kb.mul_lo(s, b);
    let rows_f = kb.cvt(Ty::F32, step_rows, Some(Rounding::Rn));
    let nearest = kb.sub(rows_f, (b - 1) as f32);
    let x = kb.mul(nearest, log2_gamma);
    kb.setp(Cmp::Lt, x, -150.0f32)
}
