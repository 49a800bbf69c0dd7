//! The state update `R ← γ^L R + (Kᵀ ⊙ ζ) V`, ζ_j = γ^(L−1−j) (ARCHITECTURE §1), one
//! implementation per engine: on the FMA units over an f32 state in shared memory
//! ([`update_state_fma`]), and on tensor cores over a warp's f32 `mma` accumulators, one
//! 16-row step of K at a time ([`zeta_quad`], [`accumulate_state_step`]).

use crate::blocks::decay::table_entry;
use crate::blocks::fma::{
    StagedChunk, accumulate_decayed_outer, for_each_piece, load_piece, store_piece,
};
use crate::dsl::tiles::{AccTileF32, LaneFragments, SharedTile16, scale_pair_split};
use crate::dsl::{Address, KernelBuilder, Operand, Reg, Space, Ty};

/// Where the FMA update finds the state and the staged chunk in shared memory.
pub struct FmaStateTiles {
    /// The shared window's base address.
    pub base: Reg,
    /// Offset of R `[K][vs]` from `base` (`None`: R starts at `base`).
    pub r: Option<u32>,
    /// The staged `Kᵀ` and `V` the update reads.
    pub staged: StagedChunk,
}

/// `R ← factor·R + Σ_{j < len} (Kᵀ[:, j] ζ_j) ⊗ V[j]` over an f32 `[kd][vs]` state in shared
/// memory, every thread of `threads` its 4×4 pieces; ζ_0 is read at `zeta.0 + zeta.1` and
/// the following ζ_j walk the decay table down.
pub fn update_state_fma(
    kb: &mut KernelBuilder,
    (t, threads): (Reg, u32),
    tiles: &FmaStateTiles,
    (kd, vs): (u32, u32),
    (factor, zeta): (Reg, (Reg, u32)),
    len: Reg,
) {
    let base = tiles.base;
    for_each_piece(kb, t, threads, kd, vs, |kb, p| {
        let r_elem = kb.mad_lo(p.row, vs, p.col);
        let r_off = kb.shl(r_elem, 2u32);
        let mut r_at = kb.add(base, r_off);
        if let Some(r) = tiles.r {
            r_at = kb.add(r_at, r);
        }
        let old = load_piece(kb, r_at, vs * 4);
        let acc: [[Reg; 4]; 4] =
            std::array::from_fn(|r| std::array::from_fn(|cc| kb.mul(old[r][cc], factor)));
        accumulate_decayed_outer(kb, &acc, (base, &p), &tiles.staged, zeta, len);
        store_piece(kb, &acc, r_at, vs * 4);
    });
}

/// The whole-chunk form of [`update_state_fma`]: `R ← γ^L R + Kᵀ (V ⊙ ζ)`, ζ_j = γ^(L−1−j),
/// both read from the decay table at offset `decay` from `tiles.base` (`c` staged rows).
pub fn update_state_fma_chunk(
    kb: &mut KernelBuilder,
    (t, threads): (Reg, u32),
    (r, kt, v, decay): (Option<u32>, u32, u32, u32),
    (kd, vs, c): (u32, u32, u32),
    (base, len): (Reg, Reg),
) {
    let (g_len_at, g_len) = table_entry(kb, (base, decay), len);
    let staged = StagedChunk {
        kt,
        kt_rows: c,
        v,
        vs,
    };
    let tiles = FmaStateTiles { base, r, staged };
    // gamma^(L-1-j) at j = 0
    let zeta = (g_len_at, decay - 4);
    update_state_fma(kb, (t, threads), &tiles, (kd, vs), (g_len, zeta), len);
}

/// ζ for the four k rows a lane's `ldmatrix` fragments hold in the 16-row step at chunk row
/// `row0`: rows j = row0 + 2q + e, e ∈ {0, 1, 8, 9}, with `z_base` = L + C − 1 − 2q; the table
/// index L − 1 − j (+ C) is clamped to C (γ^0) past L, where zero-filled k and v rows make
/// the term vanish anyway.
pub fn zeta_quad(
    kb: &mut KernelBuilder,
    z_base: Reg,
    row0: u32,
    c: u32,
    (base, table): (Reg, u32),
) -> Vec<Reg> {
    [0u32, 1, 8, 9]
        .iter()
        .map(|&e| {
            let idx = kb.sub(z_base, row0 + e);
            let cl = kb.max(idx, c);
            let cl4 = kb.shl(cl, 2u32);
            let at = kb.add(base, cl4);
            kb.ld(
                Space::Shared,
                Ty::F32,
                Address::reg(at, i64::from(table) - i64::from(4 * c)),
            )
        })
        .collect()
}

/// ξ_j = γ^(j+1) for the four rows j = row0 + 2q + e, e ∈ {0, 1, 8, 9}, of a lane's
/// `ldmatrix` fragments (as [`zeta_quad`]; `q2` = 2q): the reverse walk's update weights
/// (the chunkwise backward's dk and dv). Every index is at most C.
pub fn xi_quad(kb: &mut KernelBuilder, q2: Reg, row0: u32, (base, table): (Reg, u32)) -> Vec<Reg> {
    let q8 = kb.shl(q2, 2u32);
    let at = kb.add(base, q8);
    [0u32, 1, 8, 9]
        .iter()
        .map(|&e| {
            let off = i64::from(table + 4 * (row0 + e + 1));
            kb.ld(Space::Shared, Ty::F32, Address::reg(at, off))
        })
        .collect()
}

/// The v tile operand of a tensor-core state step: the tile, the lane's row base, the step's
/// first row, the lane's `ldmatrix` address part and the columns (the value slice).
#[derive(Clone, Copy)]
pub struct StateV {
    /// The swizzled v tile.
    pub tile: SharedTile16,
    /// The lane's row base in it.
    pub rows: Reg,
    /// First row of the 16-row step.
    pub row0: u32,
    /// The lane's `ldmatrix` column part.
    pub lane_x: Reg,
    /// Columns of V the state holds.
    pub cols: u32,
}

/// `R += (Kᵀ ⊙ ζ) V` for one 16-row step: the lane's transposed k fragments `ka` scaled by ζ
/// as 16-bit head + tail fragments (so the f32 decay is not rounded away), times the step's
/// v rows, into the state accumulator `racc`.
pub fn accumulate_state_step(
    kb: &mut KernelBuilder,
    racc: &AccTileF32,
    (ka, zeta): ([Reg; 4], &[Reg]),
    v: &StateV,
    (pty, ab): (Ty, Ty),
) {
    let split = [
        scale_pair_split(kb, ka[0], zeta[0], zeta[1]),
        scale_pair_split(kb, ka[1], zeta[0], zeta[1]),
        scale_pair_split(kb, ka[2], zeta[2], zeta[3]),
        scale_pair_split(kb, ka[3], zeta[2], zeta[3]),
    ];
    let head = split.map(|p| p.0);
    let tail = split.map(|p| p.1);
    for np in 0..v.cols / 16 {
        let vf = v
            .tile
            .ldmatrix_x4(kb, pty, true, v.rows, v.row0, 2 * np, v.lane_x);
        for kz in [head, tail] {
            racc.mma_pair(kb, ab, 2 * np as usize, kz, vf);
        }
    }
}

/// `oacc += Q · R̃[16·ks.., chunks]`, one 16-deep k step of the tensor-core paths' inter-chunk
/// term: `qa` is the warp's Q fragment at that step, R̃ the transposed state tile `rh` (rows
/// at `rh_rows`), and n-tile pair `np` takes R̃'s column chunk `chunks[np]`.
pub fn mma_state_step(
    kb: &mut KernelBuilder,
    oacc: &AccTileF32,
    (qa, ks): ([Reg; 4], u32),
    (rh, rh_rows, lanes): (&SharedTile16, Reg, &LaneFragments),
    chunks: impl IntoIterator<Item = Operand>,
    (pty, ab): (Ty, Ty),
) {
    for (np, chunk) in chunks.into_iter().enumerate() {
        let rf = rh.ldmatrix_x4(kb, pty, true, rh_rows, 16 * ks, chunk, lanes.p1_x);
        oacc.mma_pair(kb, ab, 2 * np, qa, rf);
    }
}

/// The Kᵀ operand of a warp's state slices at one 16-row step: the k tile (y in the
/// chunkwise backward), the lane's row base and `ldmatrix` column part, and the column chunk
/// of the first slice's rows with the chunk stride between slices.
#[derive(Clone, Copy)]
pub struct StateK {
    /// The swizzled k tile.
    pub tile: SharedTile16,
    /// The lane's row base in it.
    pub rows: Reg,
    /// The lane's `ldmatrix` column part.
    pub lane_x: Reg,
    /// Column chunk of slice 0's state rows.
    pub chunk0: Reg,
    /// Chunks between consecutive slices.
    pub stride: u32,
}

/// `R_j += (Kᵀ ⊙ u) V` for every state slice `raccs[j]` of a warp at the step `v.row0`
/// ([`accumulate_state_step`]); the weights `u` are emitted by `weights` after slice 0's
/// Kᵀ fragment is read.
pub fn accumulate_state_slices(
    kb: &mut KernelBuilder,
    raccs: &[AccTileF32],
    (k, v): (&StateK, &StateV),
    weights: impl FnOnce(&mut KernelBuilder) -> Vec<Reg>,
    (pty, ab): (Ty, Ty),
) {
    let fragment = |kb: &mut KernelBuilder, chunk: Reg| {
        k.tile
            .ldmatrix_x4(kb, pty, true, k.rows, v.row0, chunk, k.lane_x)
    };
    let ka0 = fragment(kb, k.chunk0);
    let u = weights(kb);
    for (j, racc) in raccs.iter().enumerate() {
        let ka = if j == 0 {
            ka0
        } else {
            let kc = kb.add(k.chunk0, k.stride * j as u32);
            fragment(kb, kc)
        };
        accumulate_state_step(kb, racc, (ka, &u), v, (pty, ab));
    }
}
