//! Staging a chunk (or a block of one) of q, k, v as f32 tiles in shared memory for the FMA
//! chunk kernels (chunkwise FMA, blocked FMA, FMA chunk states; ARCHITECTURE §3): `(sQ)ᵀ`
//! and `Kᵀ` transposed `[K][rows]`, V row-major `[rows][vs]`, every thread its
//! [`Stager`] rounds, tails past the real K, V zero-filled when the tiles are padded; and
//! the CTA's slice of the f32 state R, loaded from H0 or zeroed ([`load_state_slice`]).

use retention_core::Dtype;

use super::chunk_tiling::{THREADS, exact_dims, tile_spec};
use super::segment_fold::value_slice_index;
use crate::blocks::fma::PieceRowsOut;
use crate::blocks::shared_state::SharedStateRounds;
use crate::blocks::staging::Stager;
use crate::dsl::{KernelBuilder, ParamRef, Reg};
use crate::spec::KernelSpec;

/// The tile shape one staging serves.
#[derive(Debug, Clone, Copy)]
pub struct StagingDims {
    /// K of the tiles (padded).
    pub kd: u32,
    /// Columns of V per CTA.
    pub vs: u32,
    /// Rows staged at a time (the chunk, or the block).
    pub rows: u32,
    /// The real (K, V): global row lengths in elements.
    pub kv: (u32, u32),
    /// Threads per CTA.
    pub threads: u32,
}

/// Per-thread staging positions and global strides, computed once per kernel.
pub struct FmaChunkStaging {
    /// Staging of K-wide rows (q and k).
    pub stage_k: Stager,
    /// Staging of vs-wide rows (v).
    pub stage_v: Stager,
    /// Bytes between tokens of v / o, when asked for.
    pub tok_stride_v: Option<Reg>,
    /// The global pointers asked for, in order.
    pub ptrs: Vec<Reg>,
    round_step_k: Reg,
    round_step_v: Reg,
    col_k_bytes: Reg,
    v_col: Reg,
    col_v_bytes: Reg,
    /// Shared address of the thread's first element in a transposed `[K][rows]` tile at 0.
    st_kt: Reg,
    /// Shared address of the thread's first element in a `[rows][vs]` tile at 0.
    st_v: Reg,
    dims: StagingDims,
    heads_h: (Reg, Reg),
    es: u32,
    dtype: Dtype,
    tail: bool,
}

impl FmaChunkStaging {
    /// Positions for thread `t`: V columns from `v_col0` on, shared tiles from `base`; the
    /// pointer parameters `params` are read in order (after the round strides).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kb: &mut KernelBuilder,
        (t, base): (Reg, Reg),
        dims: StagingDims,
        (dtype, tail): (Dtype, bool),
        (heads, h): (Reg, Reg),
        v_col0: Reg,
        with_tok_stride: bool,
        params: &[&ParamRef],
    ) -> Self {
        let StagingDims {
            kd,
            vs,
            rows,
            kv: (kg, vg),
            threads,
        } = dims;
        let es = dtype.size_bytes() as u32;
        kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
        let stage_k = Stager::new(kb, t, kd, rows, threads);
        let stage_v = Stager::new(kb, t, vs, rows, threads);
        let tok_stride_v = with_tok_stride.then(|| kb.mul_wide(heads, vg * es));
        let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kg * es);
        let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vg * es);
        let ptrs = params.iter().map(|p| kb.global_ptr(p)).collect();
        let col_k_bytes = kb.mul_wide(stage_k.col, es);
        let v_col = kb.add(stage_v.col, v_col0);
        let col_v_bytes = kb.mul_wide(v_col, es);
        // Shared destinations of the thread's staged elements (round 0; rounds add immediates).
        let kt_elem = kb.mad_lo(stage_k.col, rows, stage_k.row);
        let kt_off = kb.shl(kt_elem, 2u32);
        let st_kt = kb.add(base, kt_off);
        let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
        let v_off = kb.shl(v_elem, 2u32);
        let st_v = kb.add(base, v_off);
        FmaChunkStaging {
            stage_k,
            stage_v,
            tok_stride_v,
            ptrs,
            round_step_k,
            round_step_v,
            col_k_bytes,
            v_col,
            col_v_bytes,
            st_kt,
            st_v,
            dims,
            heads_h: (heads, h),
            es,
            dtype,
            tail,
        }
    }

    /// [`FmaChunkStaging::new`] for a chunk kernel of `spec` ([`THREADS`] threads, tiles of
    /// the padded K, the real K and V in global memory) and thread `t` of head `h` (of H):
    /// `vs` columns of V from `v_col0` on, `rows` rows at a time; `with_tok_stride` also gives
    /// the bytes between tokens of v / o.
    pub fn for_spec(
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        (t, base, heads, h): (Reg, Reg, Reg, Reg),
        (vs, rows, v_col0): (u32, u32, Reg),
        (with_tok_stride, params): (bool, &[&ParamRef]),
    ) -> Self {
        let heads_h = (heads, h);
        let dims = StagingDims {
            kd: tile_spec(spec).k,
            vs,
            rows,
            kv: (spec.k, spec.v),
            threads: THREADS,
        };
        let dtype_tail = (spec.dtype, !exact_dims(spec));
        let stride = with_tok_stride;
        Self::new(
            kb,
            (t, base),
            dims,
            dtype_tail,
            heads_h,
            v_col0,
            stride,
            params,
        )
    }

    /// Byte offset of the thread's first element of a K-wide tensor's rows from token `tok`.
    pub fn k_row_offset(&self, kb: &mut KernelBuilder, tok: Reg) -> Reg {
        let row_bytes = self.dims.kv.0 * self.es;
        self.stage_k
            .row_offset(kb, tok, self.heads_h, row_bytes, self.col_k_bytes)
    }

    /// Stage rows `< len` of a K-wide tensor whose thread's first element is at `first`,
    /// transposed into the tile at shared offset `tile` (times `scale` when given).
    pub fn stage_kt_at(
        &self,
        kb: &mut KernelBuilder,
        first: Reg,
        len: Reg,
        tile: u32,
        scale: Option<Reg>,
    ) {
        let sh = kb.add(self.st_kt, tile);
        let k_tail = self.tail.then_some((self.stage_k.col, self.dims.kv.0));
        let step = self.stage_k.rows_per_round * 4; // next rows: next columns of the transpose
        self.stage_k.stage_f32_transposed(
            kb,
            self.dtype,
            (first, self.round_step_k),
            len,
            (sh, step),
            k_tail,
            (self.dims.rows * 4, scale),
        );
    }

    /// Stage rows `tok..` (`< len`) of the K-wide tensor at `src`, transposed into the tile at
    /// shared offset `tile` (times `scale` when given).
    pub fn stage_kt(
        &self,
        kb: &mut KernelBuilder,
        (src, tok, len): (Reg, Reg, Reg),
        tile: u32,
        scale: Option<Reg>,
    ) {
        let off = self.k_row_offset(kb, tok);
        let first = kb.add(src, off);
        self.stage_kt_at(kb, first, len, tile, scale);
    }

    /// Stage rows `tok..` (`< len`) of the V-wide tensor at `src` (this CTA's columns) into
    /// the row-major tile at shared offset `tile`.
    pub fn stage_v(&self, kb: &mut KernelBuilder, (src, tok, len): (Reg, Reg, Reg), tile: u32) {
        let row_bytes = self.dims.kv.1 * self.es;
        let off = self
            .stage_v
            .row_offset(kb, tok, self.heads_h, row_bytes, self.col_v_bytes);
        let first = kb.add(src, off);
        let sh = kb.add(self.st_v, tile);
        let step = self.stage_v.rows_per_round * self.dims.vs * 4;
        let v_tail = self.tail.then_some((self.v_col, self.dims.kv.1));
        self.stage_v.stage_f32_rows(
            kb,
            self.dtype,
            (first, self.round_step_v),
            len,
            (sh, step),
            v_tail,
        );
    }
}

/// Where the FMA chunk kernels' o pieces go: `o` of `spec` (its dtype, the real V, masked
/// past it when the tiles are padded), rows `< len` from token `tok0` of head `heads_h.1`,
/// columns from `col0`; `tok_stride` as [`PieceRowsOut::tok_stride`].
pub fn o_rows(
    spec: &KernelSpec,
    dst: Reg,
    (tok0, len): (Reg, Reg),
    (heads_h, col0): ((Reg, Reg), Reg),
    tok_stride: Option<Reg>,
) -> PieceRowsOut {
    PieceRowsOut {
        dst,
        tok0,
        heads_h,
        col0,
        dtype: spec.dtype,
        dim: spec.v,
        len,
        tail: !exact_dims(spec),
        tok_stride,
    }
}

/// The CTA's slice of the f32 state R in shared memory (FMA chunk kernels): R as
/// `[K][vs]` groups of four, group t first.
pub struct StateSlice {
    /// The CTA's first V column.
    pub v_col0: Reg,
    /// The (row, head) index b·H + h.
    pub bh: Reg,
    /// The rounds that move the thread's groups.
    pub state: SharedStateRounds,
    /// Byte offset of the thread's first group in the global `[N,H,K,V]` state.
    pub state_bytes: Reg,
    /// The thread's first group in shared memory.
    pub my_state: Reg,
}

/// Load R = H0[b,h][:, vs·z..vs·z+vs] when `h0` is given, else 0 (z the V-slice part of
/// `ctaid.z`), for thread `t` of the CTA of row `b`, head `h` (of H = `heads`); the state
/// window at `base`, `t16` = 16·t. `tail`: the real (K, V) of padded tiles.
pub fn load_state_slice(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    h0: &ParamRef,
    (b, h, heads, t): (Reg, Reg, Reg, Reg),
    (base, t16): (Reg, Reg),
    (vs, tail): (u32, Option<(u32, u32)>),
) -> StateSlice {
    let (kd, kg, vg) = (tile_spec(spec).k, spec.k, spec.v);
    kb.comment(format!(
        "R = H0[b,h][:, {vs}z..{vs}z+{vs}] when given, else 0 (z = ctaid.z)"
    ));
    let z = value_slice_index(kb, spec);
    let v_col0 = kb.mul_lo(z, vs); // first V column of this CTA
    let bh = kb.mad_lo(b, heads, h);
    let bh_bytes = kb.mul_wide(bh, kg * vg * 4);
    let state = SharedStateRounds::new(kb, t, v_col0, (kd, vs, vg), THREADS);
    let state_bytes = kb.add(bh_bytes, state.elem_bytes); // this thread's first global group
    let my_state = kb.add(base, t16);
    state.load_or_zero(kb, h0, state_bytes, my_state, tail);
    StateSlice {
        v_col0,
        bh,
        state,
        state_bytes,
        my_state,
    }
}
