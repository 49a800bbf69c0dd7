//! How the chunk and parallel families lay out a kernel's dynamic shared window: arrays one
//! after another from byte 0 (f32 arrays of the FMA paths, swizzled 16-bit tiles of the
//! tensor-core paths), then the decay table γ^d of a chunk or the band of a tile pair. Every
//! layout computes its offsets here, so the running sum is written once (ARCHITECTURE §3,
//! retention math).

use crate::dsl::tiles::SharedTile16;

/// Bytes of the f32 decay table γ^d for d = 0..=`c`, rounded up to 16 bytes (the chunk
/// kernels' table, [`crate::blocks::decay`]).
pub const fn decay_table_bytes(c: u32) -> u32 {
    ((c + 1) * 4).div_ceil(16) * 16
}

/// Bytes of the band table of a `b`-row tile pair: 2B − 1 f32, padded to 2B
/// ([`crate::math::decay_band`]).
pub const fn band_table_bytes(b: u32) -> u32 {
    2 * b * 4
}

/// Byte offsets of f32 arrays of `lens` elements laid one after another from byte `start`,
/// and the byte just past the last.
pub const fn f32_arrays<const N: usize>(start: u32, lens: [u32; N]) -> ([u32; N], u32) {
    let mut at = [0; N];
    let mut end = start;
    let mut i = 0;
    while i < N {
        at[i] = end;
        end += lens[i] * 4;
        i += 1;
    }
    (at, end)
}

/// Swizzled 16-bit tiles of `shapes` (rows, columns) laid one after another from byte
/// `start`, and the byte just past the last.
pub const fn tiles16<const N: usize>(
    start: u32,
    shapes: [(u32, u32); N],
) -> ([SharedTile16; N], u32) {
    let mut tiles = [SharedTile16::new(0, 0, 0); N];
    let mut end = start;
    let mut i = 0;
    while i < N {
        let (rows, cols) = shapes[i];
        tiles[i] = SharedTile16::new(end, rows, cols);
        end += tiles[i].bytes();
        i += 1;
    }
    (tiles, end)
}

/// The widest column slice of `start`, `start`/2, … (not below `min`) whose window of
/// `bytes(slice)` bytes fits `limit`; `min` (or `start` when narrower) when none does — the
/// caller's validate then refuses the spec.
pub fn widest_slice(start: u32, min: u32, limit: u32, bytes: impl Fn(u32) -> u32) -> u32 {
    let mut slice = start;
    while slice > min && bytes(slice) > limit {
        slice /= 2;
    }
    slice
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_follow_each_other() {
        assert_eq!(f32_arrays(0, [2, 3, 1]), ([0, 8, 20], 24));
        assert_eq!(f32_arrays(16, [4]), ([16], 32));
        let ([q, k], end) = tiles16(0, [(16, 64), (32, 128)]);
        assert_eq!(
            (q.offset, k.offset, k.rows, k.cols, end),
            (0, 2048, 32, 128, 10240)
        );
        assert_eq!(decay_table_bytes(64), 272);
        assert_eq!(decay_table_bytes(3), 16);
        assert_eq!(band_table_bytes(32), 256);
        // 512 → 256 → 128: the first within 600 bytes at 4 bytes a column; never below 64.
        assert_eq!(widest_slice(512, 64, 600, |s| 4 * s), 128);
        assert_eq!(widest_slice(512, 64, 1, |s| 4 * s), 64);
        assert_eq!(widest_slice(32, 64, 1, |s| 4 * s), 32);
    }
}
