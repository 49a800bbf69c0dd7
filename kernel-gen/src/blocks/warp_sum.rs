//! Warp-wide sums: every lane of a converged warp ends with the sum of one f32 over all 32
//! lanes (a butterfly of `shfl.bfly` over offsets 16, 8, 4, 2, 1). No spec knowledge; see
//! ARCHITECTURE.md §3 for the layers.

use crate::dsl::{KernelBuilder, Reg, ShflMode};

/// Σ over the 32 lanes of `x` (f32), in every lane. A warp collective: all 32 lanes must
/// reach it converged. The order of the additions is the same in every lane, so every lane
/// holds the same bits.
pub fn warp_sum_f32(kb: &mut KernelBuilder, x: Reg) -> Reg {
    let mut acc = x;
    let mut offset = 16u32;
    while offset > 0 {
        let other = kb.warp_shfl(ShflMode::Bfly, acc, offset, 0x1fu32, u32::MAX);
        acc = kb.add(acc, other);
        offset /= 2;
    }
    acc
}
