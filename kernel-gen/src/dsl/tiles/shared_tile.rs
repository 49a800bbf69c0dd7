//! Swizzled 16-bit tiles in shared memory and the `ldmatrix` fragments read from them.

use crate::dsl::{Address, Imm, KernelBuilder, Operand, Reg, Ty};

/// A `[rows][cols]` tile of 16-bit elements at byte `offset` of a shared window. Row pitch is
/// `2·cols` bytes (a multiple of 128); the 16-byte chunk `c` of row `r` is stored at chunk
/// position `c ^ (r mod 8)`, which makes the eight rows of an `ldmatrix` matrix land in eight
/// different bank groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedTile16 {
    /// Byte offset in the shared window (a multiple of 128).
    pub offset: u32,
    /// Rows.
    pub rows: u32,
    /// Columns (16-bit elements; a multiple of 64).
    pub cols: u32,
}

/// Per-lane parts of `ldmatrix` addresses, shared by every tile with the same row pitch.
///
/// Two patterns cover every fragment a row-major product needs:
/// - `p1` (A from `[m][k]`, and B from `[k][n]` with `.trans`): lane l addresses row
///   `r0 + (l mod 16)`, chunk `c0 + l div 16`;
/// - `p2` (B from `[n][k]`, and A from `[k][m]` with `.trans`): lane l addresses row
///   `r0 + (l mod 8) + 8·(l div 16)`, chunk `c0 + (l div 8) mod 2`.
///
/// With r0 a multiple of 16 and c0 even, the swizzled chunk is `c0 ^ x` for a per-lane `x`.
#[derive(Debug, Clone, Copy)]
pub struct LaneFragments {
    /// `p1`: row offset in rows.
    pub p1_row: Reg,
    /// `p1`: chunk xor.
    pub p1_x: Reg,
    /// `p2`: row offset in rows.
    pub p2_row: Reg,
    /// `p2`: chunk xor.
    pub p2_x: Reg,
}

impl LaneFragments {
    /// Compute the per-lane parts from `lane` (`%laneid` or `tid mod 32`).
    pub fn new(kb: &mut KernelBuilder, lane: Reg) -> Self {
        let low3 = kb.and(lane, 7u32);
        let p1_row = kb.and(lane, 15u32);
        let half = kb.shr(lane, 4u32);
        let p1_x = kb.xor(half, low3);
        let hi8 = kb.shl(half, 3u32);
        let p2_row = kb.add(low3, hi8);
        let eighth = kb.shr(lane, 3u32);
        let odd = kb.and(eighth, 1u32);
        let p2_x = kb.xor(odd, low3);
        LaneFragments {
            p1_row,
            p1_x,
            p2_row,
            p2_x,
        }
    }
}

impl SharedTile16 {
    /// A tile; `cols` must make the row pitch a multiple of 128 bytes.
    pub const fn new(offset: u32, rows: u32, cols: u32) -> Self {
        SharedTile16 { offset, rows, cols }
    }

    /// Row pitch in bytes.
    pub const fn pitch(&self) -> u32 {
        self.cols * 2
    }

    /// Bytes.
    pub const fn bytes(&self) -> u32 {
        self.rows * self.pitch()
    }

    /// Shared address (register) of the 16-byte chunk `chunk` of row `row`.
    pub fn chunk_addr(&self, kb: &mut KernelBuilder, base: Reg, row: Reg, chunk: Reg) -> Reg {
        let swz = kb.and(row, 7u32);
        let phys = kb.xor(chunk, swz);
        let row_bytes = kb.mad_lo(row, self.pitch(), base);
        let chunk_bytes = kb.shl(phys, 4u32);
        let at = kb.add(row_bytes, chunk_bytes);
        kb.add(at, self.offset)
    }

    /// The per-lane row base of pattern `p1` or `p2` for rows starting at `r0` (a register
    /// multiple of 16): `base + offset + (r0 + lane row)·pitch`.
    pub fn lane_rows(&self, kb: &mut KernelBuilder, base: Reg, r0: Reg, lane_row: Reg) -> Reg {
        let row = kb.add(r0, lane_row);
        let at = kb.mad_lo(row, self.pitch(), base);
        kb.add(at, self.offset)
    }

    /// `ldmatrix.x4` at `rows` (from [`Self::lane_rows`]) plus generation-time row offset
    /// `dr` (a multiple of 16) and chunk `c0 ^ x` (`c0` even: an immediate or a register).
    pub fn ldmatrix_x4(
        &self,
        kb: &mut KernelBuilder,
        ty: Ty,
        trans: bool,
        rows: Reg,
        dr: u32,
        c0: impl Into<Operand>,
        x: Reg,
    ) -> [Reg; 4] {
        let phys = kb.xor(x, c0);
        let off = kb.shl(phys, 4u32);
        let at = kb.add(rows, off);
        let r = kb.warp_ldmatrix(4, trans, ty, Address::reg(at, i64::from(dr * self.pitch())));
        [r[0], r[1], r[2], r[3]]
    }
}

impl SharedTile16 {
    /// Store a warp's accumulator (rows `r0 + g` and `r0 + g + 8`, `r0` a multiple of 16;
    /// columns from chunk `first_chunk` on: n-tile `nt` goes to chunk `first_chunk + nt`, an
    /// immediate when `first_chunk` is one, else added in a register, e.g. a warp's column
    /// group) rounded to `ab`, one packed pair per `st.shared.b32`; with the swizzle the
    /// eight rows of a store hit eight bank groups.
    pub fn store_acc(
        &self,
        kb: &mut KernelBuilder,
        base: Reg,
        acc: &super::AccTileF32,
        ab: Ty,
        r0: Reg,
        g: Reg,
        q: Reg,
        first_chunk: impl Into<Operand>,
    ) {
        let first_chunk = first_chunk.into();
        let row = kb.add(r0, g);
        let row_at = kb.mad_lo(row, self.pitch(), base);
        let q4 = kb.shl(q, 2u32);
        let row_at = kb.add(row_at, q4);
        for nt in 0..acc.frags.len() {
            let c = match first_chunk {
                Operand::Imm(Imm::Int(first)) => Operand::Imm(Imm::Int(first + nt as i64)),
                first => kb.add(first, nt as u32).into(),
            };
            let phys = kb.xor(g, c);
            let off = kb.shl(phys, 4u32);
            let at = kb.add(row_at, off);
            let lo = acc.packed_pair(kb, ab, nt, 0);
            let hi = acc.packed_pair(kb, ab, nt, 2);
            let off = i64::from(self.offset);
            kb.st(crate::dsl::Space::Shared, Address::reg(at, off), lo);
            kb.st(
                crate::dsl::Space::Shared,
                Address::reg(at, off + i64::from(8 * self.pitch())),
                hi,
            );
        }
    }
}
