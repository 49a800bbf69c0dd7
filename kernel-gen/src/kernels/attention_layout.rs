//! How the attention decode kernels lay a cached token over a warp's lanes, and the 16-byte
//! row loads and f32 widening both passes share.
//!
//! A *lane group* of G lanes (a power of two dividing 32) reads one token: its key row of
//! K elements and its value row of V elements. Lane j of the group reads the pieces
//! `i·G + j` (i = 0, 1, …) of each row, a piece being at most 16 bytes, so the G lanes of a
//! group touch consecutive 16-byte pieces and the 32/G groups of a warp read 32/G consecutive
//! rows: every global request is fully coalesced. G is the number of 16-byte pieces of the
//! wider row, capped at 32; the narrower row then gets 4- or 8-byte pieces.

use retention_core::Dtype;

use crate::dsl::{Address, Imm, KernelBuilder, Reg, Space, Ty};
use crate::spec::KernelSpec;

/// Bytes of the widest global access.
const MAX_PIECE_BYTES: u32 = 16;

/// One row (K or V elements) as each lane of a group sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSplit {
    /// Bytes of one piece (4, 8 or 16).
    pub piece_bytes: u32,
    /// Pieces per lane.
    pub pieces: u32,
    /// Bytes of one element.
    pub esize: u32,
}

impl RowSplit {
    fn new(dim: u32, esize: u32, group: u32) -> Self {
        let lane_bytes = dim * esize / group;
        let piece_bytes = lane_bytes.min(MAX_PIECE_BYTES);
        RowSplit {
            piece_bytes,
            pieces: lane_bytes / piece_bytes,
            esize,
        }
    }

    /// Elements in one piece.
    pub fn piece_elems(self) -> u32 {
        self.piece_bytes / self.esize
    }

    /// Elements a lane holds.
    pub fn lane_elems(self) -> u32 {
        self.pieces * self.piece_elems()
    }

    /// Byte offset of piece `i` from the group's lane-0 piece-0 position (lane offset aside).
    pub fn piece_offset(self, i: u32, group: u32) -> i64 {
        i64::from(i * group * self.piece_bytes)
    }
}

/// The lane mapping of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LaneLayout {
    /// Lanes per token (G).
    pub group: u32,
    /// The key row.
    pub k: RowSplit,
    /// The value row.
    pub v: RowSplit,
}

impl LaneLayout {
    /// The mapping for `spec`'s K, V and dtype.
    pub fn new(spec: &KernelSpec) -> Self {
        let esize = spec.dtype.size_bytes() as u32;
        let widest = spec.k.max(spec.v) * esize;
        let group = (widest / MAX_PIECE_BYTES).clamp(1, 32);
        LaneLayout {
            group,
            k: RowSplit::new(spec.k, esize, group),
            v: RowSplit::new(spec.v, esize, group),
        }
    }

    /// Tokens a warp reads side by side (32 / G).
    pub fn groups_per_warp(self) -> u32 {
        32 / self.group
    }
}

/// The element type as a load sees it: f32, or packed pairs of 16-bit floats.
fn word_ty(dtype: Dtype) -> Ty {
    match dtype {
        Dtype::F32 => Ty::F32,
        Dtype::F16 => Ty::F16x2,
        Dtype::Bf16 => Ty::Bf16x2,
    }
}

/// Load one piece (`piece_bytes` at `addr`) as 32-bit words: f32 or packed 16-bit pairs.
pub(crate) fn load_piece_words(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    piece_bytes: u32,
    addr: Address,
) -> Vec<Reg> {
    kb.ld_vec(
        Space::Global,
        word_ty(dtype),
        (piece_bytes / 4) as usize,
        addr,
    )
}

/// As [`load_piece_words`] where `valid` holds; zeros elsewhere (nothing is read there, and
/// the zeros keep a masked token's products finite).
pub(crate) fn load_piece_words_masked(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    piece_bytes: u32,
    addr: Address,
    valid: Reg,
) -> Vec<Reg> {
    let ty = word_ty(dtype);
    let zeros: Vec<Reg> = (0..piece_bytes / 4)
        .map(|_| match ty {
            Ty::F32 => kb.mov(ty, 0.0f32),
            _ => kb.mov(ty, Imm::Packed(0)),
        })
        .collect();
    kb.guarded(valid, false, |kb| {
        let words = load_piece_words(kb, dtype, piece_bytes, addr);
        for (&z, w) in zeros.iter().zip(words) {
            kb.assign(z, w);
        }
    });
    zeros
}

/// Widen loaded words to f32 elements, in memory order.
pub(crate) fn widen(kb: &mut KernelBuilder, words: &[Reg]) -> Vec<Reg> {
    let mut out = Vec::with_capacity(words.len() * 2);
    for &w in words {
        if w.ty == Ty::F32 {
            out.push(w);
        } else {
            let (lo, hi) = kb.unpack(w);
            out.push(kb.cvt(Ty::F32, lo, None));
            out.push(kb.cvt(Ty::F32, hi, None));
        }
    }
    out
}

/// Round f32 values (a multiple of 2 for 16-bit dtypes, at most 16 bytes once rounded) to
/// `dtype` and store them in one access at `addr`.
pub(crate) fn store_from_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address, xs: &[Reg]) {
    match dtype {
        Dtype::F32 => {
            let ops: Vec<_> = xs.iter().map(|&x| x.into()).collect();
            kb.st_vec(Space::Global, Ty::F32, addr, &ops);
        }
        Dtype::F16 | Dtype::Bf16 => {
            let ty = word_ty(dtype);
            let ops: Vec<_> = xs
                .chunks_exact(2)
                .map(|p| kb.cvt_pack(ty, p[1], p[0]).into())
                .collect();
            kb.st_vec(Space::Global, ty, addr, &ops);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Arch;

    fn layout(k: u32, v: u32, dtype: Dtype) -> LaneLayout {
        LaneLayout::new(&KernelSpec::attention_decode(k, v, dtype, Arch::Sm80))
    }

    #[test]
    fn groups_read_whole_rows_in_pieces_of_at_most_16_bytes() {
        for k in [64, 128, 256] {
            for v in [64, 128, 256, 512] {
                for dtype in Dtype::ALL {
                    let l = layout(k, v, dtype);
                    let es = dtype.size_bytes() as u32;
                    for (dim, row) in [(k, l.k), (v, l.v)] {
                        assert!(matches!(row.piece_bytes, 4 | 8 | 16), "{k} {v} {dtype:?}");
                        assert_eq!(row.pieces * row.piece_bytes * l.group, dim * es);
                    }
                }
            }
        }
        // bf16 K = V = 128: 16 lanes of one 16-byte piece each, two tokens per warp.
        let l = layout(128, 128, Dtype::Bf16);
        assert_eq!((l.group, l.k.pieces, l.k.piece_bytes), (16, 1, 16));
        // f32 K = 256, V = 512: a full warp per token, 2 and 4 pieces per lane.
        let l = layout(256, 512, Dtype::F32);
        assert_eq!((l.group, l.k.pieces, l.v.pieces), (32, 2, 4));
    }
}
