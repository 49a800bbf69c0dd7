//! A weighted outer-product update of an f32 state piece on the FMA units, for kernels that
//! walk a chunk's tokens with per-token weights read forwards or backwards from a shared
//! decay table (the chunkwise backward: ζ_j = γ^(L−1−j) read downwards, ξ_j = γ^(j+1)
//! upwards). Operands as in [`super::fma`]: inner-major f32 tiles in shared memory.

pub use super::fma::WeightStep;
use super::fma::{Acc4x4, Piece, StagedChunk, accumulate_walked_outer};
use crate::dsl::{KernelBuilder, Reg, Ty};

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
    let first = |kb: &mut KernelBuilder| kb.mov(Ty::U32, weight0);
    accumulate_walked_outer(kb, acc, (base, p), chunk, (first, step), len);
}
