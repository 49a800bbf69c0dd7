//! A warp's f32 accumulator tile held as `mma.m16n8k16` C/D fragments.

use crate::dsl::{KernelBuilder, Reg, Rounding, Ty};

/// A 16 × 8n f32 tile, one warp: `frags[nt]` holds (row g, cols 2q, 2q+1) and (row g+8,
/// cols 2q, 2q+1) of n-tile `nt` (columns `8nt..8nt+8`).
#[derive(Debug, Clone)]
pub struct AccTileF32 {
    /// Fragments, one per 8-column n-tile.
    pub frags: Vec<[Reg; 4]>,
}

impl AccTileF32 {
    /// A zero tile with `cols / 8` n-tiles.
    pub fn zeros(kb: &mut KernelBuilder, cols: u32) -> Self {
        AccTileF32 {
            frags: (0..cols / 8)
                .map(|_| std::array::from_fn(|_| kb.mov(Ty::F32, 0.0f32)))
                .collect(),
        }
    }

    /// `acc[:, nt] += A · B` for one 16×16 A fragment and one B fragment.
    pub fn mma(&self, kb: &mut KernelBuilder, ab: Ty, nt: usize, a: [Reg; 4], b: [Reg; 2]) {
        let d = self.frags[nt];
        kb.warp_mma_m16n8k16_into(ab, d, a, b, d);
    }

    /// The two `mma`s of an `ldmatrix.x4` B operand `b` (two 8-column n-tiles): n-tile `nt`
    /// takes `b[0..2]`, n-tile `nt + 1` takes `b[2..4]`.
    pub fn mma_pair(&self, kb: &mut KernelBuilder, ab: Ty, nt: usize, a: [Reg; 4], b: [Reg; 4]) {
        self.mma(kb, ab, nt, a, [b[0], b[1]]);
        self.mma(kb, ab, nt + 1, a, [b[2], b[3]]);
    }

    /// A new tile whose element e of n-tile nt is `f(kb, nt, e, x)`, x this tile's element,
    /// emitted in fragment order.
    pub fn map(
        &self,
        kb: &mut KernelBuilder,
        mut f: impl FnMut(&mut KernelBuilder, usize, usize, Reg) -> Reg,
    ) -> AccTileF32 {
        AccTileF32 {
            frags: self
                .frags
                .iter()
                .enumerate()
                .map(|(nt, x)| std::array::from_fn(|e| f(kb, nt, e, x[e])))
                .collect(),
        }
    }

    /// Multiply rows g by `lo` and rows g+8 by `hi`, in place.
    pub fn scale_rows(&self, kb: &mut KernelBuilder, lo: Reg, hi: Reg) {
        for f in &self.frags {
            for (i, &x) in f.iter().enumerate() {
                let s = if i < 2 { lo } else { hi };
                kb.fma_into(x, x, s, -0.0f32);
            }
        }
    }

    /// Multiply every element by `s`, in place.
    pub fn scale(&self, kb: &mut KernelBuilder, s: Reg) {
        self.scale_rows(kb, s, s);
    }

    /// Element `i` of n-tile `nt` packed with its neighbour: (i, i+1) for i ∈ {0, 2}, rounded
    /// to the 16-bit type `ab` (lower column in the low half).
    pub fn packed_pair(&self, kb: &mut KernelBuilder, ab: Ty, nt: usize, i: usize) -> Reg {
        let f = self.frags[nt];
        kb.cvt_pack(ab.packed().unwrap_or(Ty::F16x2), f[i + 1], f[i])
    }

    /// What rounding to the 16-bit type `ab` leaves out of each element, x − round(x): the
    /// tail of a head + tail pair of products that carries about twice `ab`'s precision.
    pub fn rounding_rest(&self, kb: &mut KernelBuilder, ab: Ty) -> AccTileF32 {
        self.map(kb, |kb, _, _, x| {
            let r = kb.cvt(ab, x, Some(Rounding::Rn));
            let w = kb.cvt(Ty::F32, r, None);
            kb.sub(x, w)
        })
    }

    /// The tile as A fragments of a following product (16 × 16 per k-step), rounded to `ab`:
    /// k-step s is n-tiles 2s and 2s+1.
    pub fn to_a_fragments(&self, kb: &mut KernelBuilder, ab: Ty) -> Vec<[Reg; 4]> {
        (0..self.frags.len() / 2)
            .map(|s| {
                [
                    self.packed_pair(kb, ab, 2 * s, 0),
                    self.packed_pair(kb, ab, 2 * s, 2),
                    self.packed_pair(kb, ab, 2 * s + 1, 0),
                    self.packed_pair(kb, ab, 2 * s + 1, 2),
                ]
            })
            .collect()
    }
}

/// Multiply both halves of a packed 16-bit pair by f32 factors and split each product into
/// a rounded 16-bit head and the 16-bit rounding of its remainder, so that a product on the
/// tensor cores with `head` and then `tail` carries about twice the input type's precision
/// (an f32 factor is never rounded to 16 bits whole). Returns (head, tail).
pub fn scale_pair_split(
    kb: &mut KernelBuilder,
    pair: Reg,
    lo_factor: Reg,
    hi_factor: Reg,
) -> (Reg, Reg) {
    let (lo, hi) = kb.unpack_f32(pair);
    let lo = kb.mul(lo, lo_factor);
    let hi = kb.mul(hi, hi_factor);
    let head = kb.cvt_pack(pair.ty, hi, lo);
    let (head_lo, head_hi) = kb.unpack_f32(head);
    let rest_lo = kb.sub(lo, head_lo);
    let rest_hi = kb.sub(hi, head_hi);
    let tail = kb.cvt_pack(pair.ty, rest_hi, rest_lo);
    (head, tail)
}
