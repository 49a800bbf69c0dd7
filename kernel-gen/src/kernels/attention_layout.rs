//! How the attention decode kernels lay a cached token over a warp's lanes, and the row
//! loads, f32 widening and output stores both passes share.
//!
//! A *lane group* of G lanes (a power of two dividing 32) reads one token: its key row of
//! K elements and its value row of V elements. Lane j of the group reads the pieces
//! `i·G + j` (i = 0, 1, …) of each row, a piece being at most 16 bytes, so the G lanes of a
//! group touch consecutive pieces and the 32/G groups of a warp read 32/G consecutive rows:
//! every global request is coalesced. A piece is as wide as the row's alignment allows (a
//! row starts at a multiple of its own byte length, so its alignment is the largest power of
//! two dividing K·e, resp. V·e, capped at 16 bytes); G is the number of such pieces of the
//! wider row, rounded up to a power of two and capped at 32; the narrower row then gets
//! narrower pieces (at least 4 bytes where its alignment allows) to spread over all G lanes.
//! When G does not divide a row's piece count, the lanes past the row's end in its last piece
//! are masked (their elements read as zero, nothing loaded). For K, V multiples of 64 every
//! lane holds whole pieces and nothing is masked.

use retention_core::Dtype;

use crate::dsl::{Address, Axis, Cmp, Imm, KernelBuilder, Reg, Rounding, Space, Sreg, Ty};
use crate::spec::KernelSpec;

/// The coordinates both passes read: head h = `ctaid.y` of H = `nctaid.y` heads, row
/// n = `ctaid.z` and thread t = `tid.x`, as `(h, H, n, t)`.
pub(crate) fn head_row_thread(kb: &mut KernelBuilder) -> (Reg, Reg, Reg, Reg) {
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let heads = kb.sreg(Sreg::Nctaid(Axis::Y));
    let n = kb.sreg(Sreg::Ctaid(Axis::Z));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    (h, heads, n, t)
}

/// Bytes of the widest global access.
const MAX_PIECE_BYTES: u32 = 16;

/// The largest power of two dividing `bytes` (a row's alignment), at most 16.
fn row_alignment(bytes: u32) -> u32 {
    (bytes & bytes.wrapping_neg()).min(MAX_PIECE_BYTES)
}

/// One row (K or V elements) as each lane of a group sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSplit {
    /// Bytes of one piece (2, 4, 8 or 16; 2 only for a 16-bit row of odd length).
    pub piece_bytes: u32,
    /// Pieces per lane (the last one masked for some lanes when `tail_lanes` is set).
    pub pieces: u32,
    /// Bytes of one element.
    pub esize: u32,
    /// `Some(n)`: only lanes j < n of a group hold a last piece (the row has
    /// `(pieces − 1)·G + n` pieces); `None`: every lane holds every piece.
    pub tail_lanes: Option<u32>,
}

impl RowSplit {
    fn new(dim: u32, esize: u32, group: u32) -> Self {
        let bytes = dim * esize;
        let align = row_alignment(bytes);
        let lane_bytes = bytes / group;
        let spread = if lane_bytes == 0 {
            0
        } else {
            1 << lane_bytes.ilog2()
        };
        let piece_bytes = spread.max(4.min(align)).min(align);
        let count = bytes / piece_bytes;
        let pieces = count.div_ceil(group);
        let last = count - (pieces - 1) * group;
        RowSplit {
            piece_bytes,
            pieces,
            esize,
            tail_lanes: (last < group).then_some(last),
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

    /// Whether piece `i` is masked for some lanes.
    pub fn masked(self, i: u32) -> bool {
        self.tail_lanes.is_some() && i + 1 == self.pieces
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
        let widest = [spec.k, spec.v]
            .into_iter()
            .map(|d| (d * esize).div_ceil(row_alignment(d * esize)))
            .max()
            .unwrap_or(1);
        let group = widest.next_power_of_two().clamp(1, 32);
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

/// The widest access (in elements: 4, 2 or 1) every row of `dim` elements allows.
pub(crate) fn column_width(dim: u32) -> u32 {
    if dim.is_multiple_of(4) {
        4
    } else if dim.is_multiple_of(2) {
        2
    } else {
        1
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

/// The single 16-bit element type of `dtype` (pieces of 2 bytes).
fn half_ty(dtype: Dtype) -> Ty {
    if dtype == Dtype::F16 {
        Ty::F16
    } else {
        Ty::Bf16
    }
}

/// Load one piece (`piece_bytes` at `addr`) as 32-bit words: f32 or packed 16-bit pairs (a
/// 2-byte piece: one 16-bit element).
pub(crate) fn load_piece_words(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    piece_bytes: u32,
    addr: Address,
) -> Vec<Reg> {
    if piece_bytes < 4 {
        return vec![kb.ld(Space::Global, half_ty(dtype), addr)];
    }
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
    let zeros: Vec<Reg> = if piece_bytes < 4 {
        let ty = half_ty(dtype);
        let zero = if ty == Ty::F16 {
            Imm::F16(0)
        } else {
            Imm::Bf16(0)
        };
        vec![kb.mov(ty, zero)]
    } else {
        (0..piece_bytes / 4)
            .map(|_| match ty {
                Ty::F32 => kb.mov(ty, 0.0f32),
                _ => kb.mov(ty, Imm::Packed(0)),
            })
            .collect()
    };
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
        } else if matches!(w.ty, Ty::F16 | Ty::Bf16) {
            out.push(kb.cvt(Ty::F32, w, None));
        } else {
            let (lo, hi) = kb.unpack_f32(w);
            out.extend([lo, hi]);
        }
    }
    out
}

/// Round f32 values (1, or a multiple of 2 for 16-bit dtypes, at most 16 bytes once
/// rounded) to `dtype` and store them in one access at `addr`.
pub(crate) fn store_from_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address, xs: &[Reg]) {
    match dtype {
        Dtype::F32 => {
            let ops: Vec<_> = xs.iter().map(|&x| x.into()).collect();
            kb.st_vec(Space::Global, Ty::F32, addr, &ops);
        }
        Dtype::F16 | Dtype::Bf16 if xs.len() == 1 => {
            let h = kb.cvt(half_ty(dtype), xs[0], Some(Rounding::Rn));
            kb.st(Space::Global, addr, h);
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

/// Store f32 values `xs` (2 or 4) as output columns `c0..c0 + xs.len()` of a row of `v`
/// elements whose column `c0` is at `addr`: in one access when `xs.len()` divides `v` and no
/// thread's columns start past `v` (`starts_past_v` false), else in accesses of
/// [`column_width`]`(v)` elements, each predicated on lying below `v` (`c0` in a register).
pub(crate) fn store_columns(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    addr: Address,
    xs: &[Reg],
    c0: impl FnOnce(&mut KernelBuilder) -> Reg,
    (v, starts_past_v): (u32, bool),
) {
    let n = xs.len() as u32;
    if v.is_multiple_of(n) && !starts_past_v {
        store_from_f32(kb, dtype, addr, xs);
        return;
    }
    let w = column_width(v).min(n);
    let esize = dtype.size_bytes() as i64;
    let c0 = c0(kb);
    for (s, part) in xs.chunks(w as usize).enumerate() {
        let first = s as u32 * w;
        let inside = kb.setp(Cmp::Lt, c0, v - first.min(v));
        let at = Address {
            offset: addr.offset + i64::from(first) * esize,
            ..addr.clone()
        };
        kb.guarded(inside, false, |kb| store_from_f32(kb, dtype, at, part));
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
                        assert_eq!(row.tail_lanes, None);
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

    #[test]
    fn odd_rows_use_aligned_pieces_and_mask_the_last() {
        for k in 1..=256 {
            for v in [1, 7, 24, 33, 60, 100, 200, 510, 512] {
                for dtype in Dtype::ALL {
                    let l = layout(k, v, dtype);
                    let es = dtype.size_bytes() as u32;
                    assert!(l.group.is_power_of_two() && l.group <= 32);
                    for (dim, row) in [(k, l.k), (v, l.v)] {
                        let bytes = dim * es;
                        // A piece is aligned wherever a row starts, and the pieces cover the
                        // row exactly once.
                        assert!(bytes.is_multiple_of(row.piece_bytes), "{k} {v} {dtype:?}");
                        assert!(row.piece_bytes >= es && row.piece_bytes <= 16);
                        let tail = row.tail_lanes.unwrap_or(l.group);
                        assert!(tail >= 1 && tail <= l.group);
                        assert_eq!(
                            ((row.pieces - 1) * l.group + tail) * row.piece_bytes,
                            bytes,
                            "{k} {v} {dtype:?}"
                        );
                    }
                }
            }
        }
    }
}
