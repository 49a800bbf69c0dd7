//! A small tile vocabulary over the tensor-core ops, so kernels read like their math:
//!
//! - [`SharedTile16`]: a `[rows][cols]` tile of 16-bit elements in shared memory whose
//!   16-byte chunks are XOR-swizzled by row, so every `ldmatrix` phase (8 rows × 16 bytes)
//!   and every row-wise fill touches 32 distinct banks; it hands out `mma` fragments.
//! - [`LaneFragments`]: the per-lane address parts `ldmatrix` needs, computed once per kernel.
//! - [`AccTileF32`]: a warp's 16 × 8n f32 accumulator, held as `mma` C/D fragments (the
//!   state tile of a chunkwise kernel is one of these, carried across chunks in registers).
//!
//! Fragment layouts follow the PTX ISA (m16n8k16, `.row.col`): with `g = lane / 4` and
//! `q = lane % 4`, an accumulator holds rows g and g+8, columns 2q and 2q+1 of each 8-wide
//! n-tile.

mod acc_tile;
mod shared_tile;

pub use acc_tile::{AccTileF32, scale_pair_split};
pub use shared_tile::{LaneFragments, SharedTile16};
