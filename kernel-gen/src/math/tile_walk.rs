//! How the parallel form's kernels (ARCHITECTURE §1, parallel; the forward and the backward
//! families) walk a row's tokens in B-row tiles: a CTA owns tiles (query tiles in the
//! forward and the dQ pass, key tiles in the other backward passes) taken from the grid's z
//! axis, and for each walks the other side's tiles, one tile pair at a time. Written once
//! here: the z decode (value slice, first owned tile, stride), the tile count ⌈T/B⌉, a tile's
//! first token and valid rows, the loops, the launch's z extent, and the f32 shared window
//! of a tile pair on the FMA units. The decays of a pair are [`super::decay_band`]'s.

use super::shared_window::{band_table_bytes, f32_arrays};
use crate::LaunchGeometry;
use crate::dsl::{Axis, Cmp, KernelBuilder, Label, Operand, Reg, Sreg, Ty};

/// Byte offsets of the f32 arrays of one tile pair in the dynamic shared window (FMA paths):
/// the owned tile's score-side rows X, the walked tile's score-side rows Y and output-side
/// rows Z, the scores between them and the owned tile's accumulator. The forward reads X =
/// s·Q, Y = K, Z = V, A = O; the backward passes their own (see `parallel_backward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePairLayout {
    /// Owned score-side tile, transposed (and scaled), `[ds][B]`.
    pub xt: u32,
    /// Walked score-side tile, transposed, `[ds][B]`.
    pub yt: u32,
    /// Walked output-side tile's slice, `[B][ws]`.
    pub z: u32,
    /// Decayed, masked scores, `[walked row][owned row]`, `[B][B]`.
    pub st: u32,
    /// The owned tile's accumulator, `[B][ws]`.
    pub acc: u32,
    /// The band of decays, 2B − 1 f32 (padded to 2B).
    pub band: u32,
    /// Total bytes.
    pub total: u32,
}

impl TilePairLayout {
    /// The layout for score-side dim `ds`, output slice `ws` and tile `b` (padded dims).
    pub const fn new(ds: u32, ws: u32, b: u32) -> Self {
        let lens = [ds * b, ds * b, b * ws, b * b, b * ws];
        let ([xt, yt, z, st, acc], band) = f32_arrays(0, lens);
        TilePairLayout {
            xt,
            yt,
            z,
            st,
            acc,
            band,
            total: band + band_table_bytes(b),
        }
    }
}

/// Where a CTA's work lies on the grid's z axis: its column slice and its owned tiles.
pub struct GridZ {
    /// `ctaid.z`.
    pub z: Reg,
    /// `nctaid.z`.
    pub nz: Reg,
    /// Column slice index (`z mod S`).
    pub slice: Reg,
    /// First owned-tile step (`z div S`).
    pub first: Reg,
    /// Steps between this CTA's owned tiles (`nctaid.z div S`).
    pub stride: Reg,
}

impl GridZ {
    /// Decode `ctaid.z` for `slices` (a power of two) column slices.
    pub fn new(kb: &mut KernelBuilder, slices: u32) -> Self {
        let z = kb.sreg(Sreg::Ctaid(Axis::Z));
        let nz = kb.sreg(Sreg::Nctaid(Axis::Z));
        let shift = slices.trailing_zeros();
        GridZ {
            z,
            nz,
            slice: kb.and(z, slices - 1),
            first: kb.shr(z, shift),
            stride: kb.shr(nz, shift),
        }
    }
}

/// ⌈T/B⌉, the tiles of a row of `seq_len` tokens (B a power of two).
pub fn tile_count(kb: &mut KernelBuilder, seq_len: Reg, b: u32) -> Reg {
    let tiles = kb.add(seq_len, b - 1);
    kb.shr(tiles, b.trailing_zeros())
}

/// (first token, valid rows ≤ B) of tile `tile` of the row whose first token is `tok_row`.
pub fn tile_rows(
    kb: &mut KernelBuilder,
    tile: Reg,
    b: u32,
    (seq_len, tok_row): (Reg, Reg),
) -> (Reg, Reg) {
    let row0 = kb.mul_lo(tile, b);
    let remaining = kb.sub(seq_len, row0);
    let len = kb.min(remaining, b);
    (kb.add(tok_row, row0), len)
}

/// Emit `step = start; loop { exits(step, done); body(step); step += stride }; done:` —
/// `exits` branches to `done` where the walk ends.
pub fn for_steps(
    kb: &mut KernelBuilder,
    start: impl Into<Operand>,
    stride: impl Into<Operand>,
    exits: impl FnOnce(&mut KernelBuilder, Reg, Label),
    body: impl FnOnce(&mut KernelBuilder, Reg),
) {
    let step = kb.mov(Ty::U32, start);
    let (top, done) = (kb.label(), kb.label());
    kb.place(top);
    exits(kb, step, done);
    body(kb, step);
    let next = kb.add(step, stride);
    kb.assign(step, next);
    kb.bra_uni(top);
    kb.place(done);
}

/// Emit `body(tile)` for this CTA's owned tiles: steps `grid.first, + grid.stride, …` below
/// `tiles`, each the tile `tiles − 1 − step` when `longest_first` (query tiles: the longest
/// walk first), else the tile `step` (key tiles).
pub fn for_each_owned_tile(
    kb: &mut KernelBuilder,
    grid: &GridZ,
    tiles: Reg,
    longest_first: bool,
    body: impl FnOnce(&mut KernelBuilder, Reg),
) {
    for_steps(
        kb,
        grid.first,
        grid.stride,
        |kb, step, done| {
            let past = kb.setp(Cmp::Ge, step, tiles);
            kb.bra_if(past, false, done);
        },
        |kb, step| {
            let tile = if longest_first {
                let last = kb.sub(tiles, 1u32);
                kb.sub(last, step)
            } else {
                step
            };
            body(kb, tile);
        },
    );
}

/// `g` (a launch whose z extent is its column slices) spread over the ⌈`t`/`b`⌉ owned tiles of
/// T = `t` tokens: one CTA per (slice, tile), the z extent capped at 65535 (whole multiples
/// of the slices; CTAs then take several tiles).
pub fn spread_over_tiles(g: LaunchGeometry, t: u32, b: u32) -> LaunchGeometry {
    let slices = g.grid[2];
    let tiles = t.div_ceil(b).max(1);
    LaunchGeometry {
        grid: [g.grid[0], g.grid[1], slices * tiles.min(65535 / slices)],
        ..g
    }
}
