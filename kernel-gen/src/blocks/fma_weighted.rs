//! A weighted outer-product update of an f32 state piece on the FMA units, for kernels that
//! walk a chunk's tokens with per-token weights read forwards or backwards from a shared
//! decay table (the chunkwise backward: ζ_j = γ^(L−1−j) read downwards, ξ_j = γ^(j+1)
//! upwards). Operands as in [`super::fma`]: inner-major f32 tiles in shared memory.

use super::fma::{Acc4x4, Piece, StagedChunk, rank1_update};
use crate::dsl::{Address, KernelBuilder, Reg, Space, Ty};

/// Which way the weight address moves per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightStep {
    /// Token j + 1's weight is 4 bytes above token j's (ξ_j = γ^(j+1)).
    Up,
    /// Token j + 1's weight is 4 bytes below token j's (ζ_j = γ^(L−1−j)).
    Down,
}

/// `acc += Σ_{j < len} (Yᵀ[row..row+4, j] · u_j) ⊗ W[j, col..col+4]` for the piece `p`: Yᵀ is
/// `chunk.kt` (`chunk.kt_rows` columns a row), W is `chunk.v` (`chunk.vs` columns), both
/// offsets from `base`; u_0 is the f32 at shared address `weight0` and later weights follow
/// `step`; `len` is a `.u32` register.
pub fn accumulate_weighted_outer(
    kb: &mut KernelBuilder,
    acc: &Acc4x4,
    (base, p): (Reg, &Piece),
    chunk: &StagedChunk,
    (weight0, step): (Reg, WeightStep),
    len: Reg,
) {
    let c = chunk.kt_rows;
    let kt_elem = kb.mul_lo(p.row, c);
    let kt_off = kb.shl(kt_elem, 2u32);
    let kt_at = kb.add(base, kt_off);
    let a_ptr = kb.add(kt_at, chunk.kt);
    let u_ptr = kb.mov(Ty::U32, weight0);
    let w_off = kb.shl(p.col, 2u32);
    let w_at = kb.add(base, w_off);
    let b_ptr = kb.add(w_at, chunk.v);
    kb.for_range(0u32, len, 1, |kb, _| {
        let u = kb.ld(Space::Shared, Ty::F32, Address::reg(u_ptr, 0));
        let au: Vec<Reg> = (0..4u32)
            .map(|r| {
                let x = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(a_ptr, i64::from(r * c * 4)),
                );
                kb.mul(x, u)
            })
            .collect();
        let bw = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(b_ptr, 0));
        rank1_update(kb, acc, &au, &bw);
        let na = kb.add(a_ptr, 4u32);
        kb.assign(a_ptr, na);
        let nu = match step {
            WeightStep::Up => kb.add(u_ptr, 4u32),
            WeightStep::Down => kb.sub(u_ptr, 4u32),
        };
        kb.assign(u_ptr, nu);
        let nb = kb.add(b_ptr, chunk.vs * 4);
        kb.assign(b_ptr, nb);
    });
}
