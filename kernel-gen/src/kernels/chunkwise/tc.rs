//! The tensor-core path of the chunkwise forward (f16/bf16 inputs, f32 accumulation), same
//! math, parameters and grid as [`super`], one CTA per (row b, head h, slice z of
//! [`crate::math::chunk_tiling::tc_value_slice`] columns of V; below, V means the slice):
//!
//! ```text
//! warp w of W = min(max(C, K)/16, 8), lane (g = lane/4, q = lane%4):
//!   rows 16(w + rW).. of the chunk:     S_w = Q_w Kᵀ ⊙ D      (mma, f32, in registers)
//!     (r < C/16W; w < C/16 if C < 16W)  O_w = s·(ξ ⊙ (Q_w R̃) + S̃_w V)
//!   rows 16(w + jW).. of the state:     R_w ← γ^L R_w + (Kᵀ ⊙ ζ)_w V   (f32, registers)
//!     (j < K/16W; w < K/16 if K < 16W)
//! ```
//!
//! The state R never leaves registers (f32 `mma` accumulators, one or two 16-row slices per
//! warp); after each chunk every warp writes its slices rounded to the input type into `R̃`
//! in shared memory, the B operand of the next chunk's `Q R̃` (the f32 state itself is never
//! rounded). `S̃` is the masked score tile converted in registers from accumulator to A
//! fragments: the whole 16×C strip for C ≤ [`WHOLE_SCORE_TILE`], 64 columns at a time (a
//! flash-style loop into the same O accumulators) for longer chunks. q, k, v arrive by
//! `cp.async` into XOR-swizzled tiles (rows past a partial chunk are zero-filled by the
//! copy), every operand is read with `ldmatrix`, and o leaves through a swizzled shared tile
//! as whole 16-byte rows, so global traffic is q, k, v, o, H0, H_T once each (q and k once
//! per V slice) and shared accesses are free of bank conflicts. Chunks whose whole tiles do
//! not fit (C = 256 with K ≥ 128; C = 128 with K = 256 on sm_80) keep this preamble, state
//! and epilogue but walk each chunk in passes of query rows and blocks of key rows
//! ([`super::tc_streamed`]).

use retention_core::Dtype;

use super::tc_streamed::StreamedChunk;
use crate::GenError;
use crate::blocks::cta::{cta_row_head_thread, mma_types, warp_lane, warp_role as role};
use crate::blocks::decay::{TableFill, emit_decay_table, table_entry};
use crate::blocks::global::{GlobalRows, load_f32_masked, state_row_limit, store_from_f32_masked};
use crate::blocks::staging::{ColumnTail, copy_chunk_out, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments};
use crate::dsl::{Address, Cmp, KernelBuilder, Operand, Reg, Space, Ty};
use crate::math::chunk_params::{ChunkwiseParams, chunk_rows, declare_params, for_each_chunk};
use crate::math::chunk_tiling::{
    StreamedPlan, TcLayout, WHOLE_SCORE_TILE, exact_dims, streamed_plan, tc_layout, tc_value_slice,
    tc_warps, tile_spec,
};
use crate::math::kernel_head::start_kernel;
use crate::math::scores::{Diagonal, xi_rows};
use crate::math::segment_fold::{self as two_phase, FoldInto, Segment};
use crate::math::state_update::{
    StateK, StateV, accumulate_state_slices, mma_state_step, zeta_quad,
};
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention chunkwise forward (tensor cores)";
/// What the kernel computes, as its header says.
const FORMULA: &str = "per warp: S = Q K^T . D ; O = s (xi . Q R~ + S~ V) ; R <- g^L R + (K^T . zeta) V  (mma, f32 state in registers)";

/// The kernel's shape and the per-lane registers every phase reads, fixed before the
/// sequence loop.
struct TcForward<'a> {
    spec: &'a KernelSpec,
    lay: TcLayout,
    base: Reg,
    t: Reg,
    pty: Ty,
    ab: Ty,
    lanes: LaneFragments,
    /// Warp-uniform and lane coordinates: warp w, g = lane/4, q4 = lane%4, q2 = 2·q4, 16w.
    warp: Reg,
    g: Reg,
    q4: Reg,
    q2: Reg,
    i0: Reg,
    /// Per-lane row bases of the q (rows 16w..), k, v and R̃ tiles.
    q_rows: Reg,
    k_rows: Reg,
    v_rows: Reg,
    rh_rows: Reg,
    /// 16w / 8: chunk of column 16w in a [C][K] tile.
    k_chunk: Reg,
    /// Long chunks: per row block rb of the warp, its first chunk row 16(w + rb·W) and q's
    /// lane rows (empty for short chunks).
    row0: Vec<Reg>,
    long_q_rows: Vec<Reg>,
    scale: Reg,
    heads: Reg,
    h: Reg,
    /// Padded (K, V), the real (K, V), the V slice, C, the O strip width, element bytes.
    kd: u32,
    vd: u32,
    kg: u32,
    vg: u32,
    vs: u32,
    c: u32,
    ow: u32,
    es: u32,
    w_count: u32,
    threads: u32,
    tail: bool,
}

/// The warp's f32 state: 16-row slices j at rows 16(w + j·W).., and the lane's element.
struct TcState {
    raccs: Vec<AccTileF32>,
    slice_rows: Vec<Reg>,
    /// The lane's first state element (16w + g, 2q + this CTA's first column).
    my_row: Reg,
    my_col: Reg,
    my_elem_bytes: Reg,
    /// Bytes of the (row, head)'s state in a `[B,H,K,V]` tensor.
    state_bytes: Reg,
    v_col0: Option<Reg>,
}

/// Where this CTA's o rows leave: global o and v from its first column, o's 16-byte chunks.
struct OutRows {
    q: Reg,
    k: Reg,
    v: Reg,
    o: Reg,
    o_per_row: u32,
    o_ch: Reg,
    o_row0: Reg,
    o_ch_at: Reg,
    o_ch8: Option<Reg>,
    tails: Option<(ColumnTail, ColumnTail)>,
}

/// Emit the tensor-core chunkwise forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let c = spec.chunk.unwrap_or_default();
    let threads = 32 * tc_warps(spec);
    let lay = tc_layout(spec);
    let streamed = streamed_plan(spec);
    let log2_gammas = spec.gammas.log2_gammas()?;

    // Three f32 accumulator tiles live at once (S, O and the state): ptxas's default budget
    // for 128 threads (168 registers) spills a few bytes; one CTA per SM removes the cap.
    let mut kb = start_kernel(spec, TITLE, FORMULA, (threads, true));

    let p = declare_params(&mut kb, spec, log2_gammas.is_none());
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        128,
        &format!(
            "{}; f32 gamma^d [C+1] @{}",
            tiles_comment(&lay, streamed),
            lay.decay
        ),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y)");
    let (b, h, t) = cta_row_head_thread(&mut kb);
    let (lane, warp, g, q4) = warp_lane(&mut kb, t);
    let rows = chunk_rows(&mut kb, spec, &p, log2_gammas.as_deref(), (b, h));
    let (heads, log2_gamma, scale, segment) =
        (rows.heads, rows.log2_gamma, rows.scale, rows.segment);
    let (tok0, seq_len) = (rows.tok0, rows.seq_len);
    let base = kb.shared_addr(&smem);
    let fill = TableFill::Rounds {
        t,
        threads,
        reuse_t: true,
    };
    emit_decay_table(&mut kb, fill, (base, lay.decay), c, log2_gamma);

    let mut x = TcForward::new(
        &mut kb,
        spec,
        (lay, base, t),
        (warp, g, q4, lane),
        (scale, heads, h),
    );
    let state = x.load_state(&mut kb, &p, (b, log2_gamma), segment.as_ref());
    let out = x.out_rows(&mut kb, &p, state.v_col0);
    x.long_rows(&mut kb, streamed);

    let streamed = streamed.map(|plan| x.streamed(plan, &out, &state.raccs));
    let streamed_role = streamed.as_ref().map(|s| s.rows_role(&mut kb));

    kb.comment(format!("walk the sequence in chunks of {c}"));
    for_each_chunk(&mut kb, (tok0, seq_len), c, |kb, tok_c, len| {
        if let (Some(chunk), Some(role)) = (&streamed, &streamed_role) {
            chunk.emit(kb, role, len, tok_c);
            kb.comment("R~ <- R rounded, for the next chunk's passes");
            x.store_rh(kb, &state, false);
            return;
        }
        x.stage_chunk(kb, &out, (tok_c, len));
        if c > WHOLE_SCORE_TILE {
            x.long_chunk_rows(kb);
        } else {
            x.short_chunk_rows(kb);
        }
        x.update_state(kb, &state.raccs, len);
        kb.comment("R~ <- R rounded; o rows < L leave as whole 16-byte pieces");
        x.store_rh(kb, &state, true);
        x.copy_out(kb, &out, (tok_c, len));
    });

    x.store_ht(&mut kb, &p, &state, segment.as_ref());
    kb.ret();
    kb.finish()
}

/// The shared tiles' comment: whole-chunk tiles, or the streamed path's pass and block tiles.
fn tiles_comment(lay: &TcLayout, streamed: Option<StreamedPlan>) -> String {
    match streamed {
        Some(p) => format!(
            "swizzled 16-bit q [{},K] @{}, k [{},K] @{}, v [{},V] @{}, R~ [K,V] @{}, o [{},V] @{}",
            p.pass_rows,
            lay.q.offset,
            lay.k.rows,
            lay.k.offset,
            lay.v.rows,
            lay.v.offset,
            lay.rh.offset,
            p.pass_rows,
            lay.o.offset
        ),
        None => format!(
            "swizzled 16-bit q [C,K] @{}, k [C,K] @{}, v [C,V] @{}, R~ [K,V] @{}, o [C,V] @{}",
            lay.q.offset, lay.k.offset, lay.v.offset, lay.rh.offset, lay.o.offset
        ),
    }
}

impl<'a> TcForward<'a> {
    /// The shape of `spec` and the per-lane ldmatrix rows (warp w owns rows 16w..).
    fn new(
        kb: &mut KernelBuilder,
        spec: &'a KernelSpec,
        (lay, base, t): (TcLayout, Reg, Reg),
        (warp, g, q4, lane): (Reg, Reg, Reg, Reg),
        (scale, heads, h): (Reg, Reg, Reg),
    ) -> Self {
        // Tiles are generated for the padded dims (kd, vd); global rows keep the real (kg, vg).
        let tile = tile_spec(spec);
        let c = spec.chunk.unwrap_or_default();
        // Columns of O built at a time: 32 where K = 256 with C ≥ 64 leaves no registers for 64.
        let ow = if tile.k == 256 && c >= 64 { 32 } else { 64 };
        let (ab, pty) = mma_types(spec.dtype);
        let w_count = tc_warps(spec);
        kb.comment("per-lane ldmatrix rows; warp w owns rows 16w.. of the chunk and of the state");
        let lanes = LaneFragments::new(kb, lane);
        let zero = kb.mov(Ty::U32, 0u32);
        let i0 = kb.shl(warp, 4u32);
        let k_chunk = kb.shl(warp, 1u32); // 16w / 8: chunk of column 16w in a [C][K] tile
        let q_rows = lay.q.lane_rows(kb, base, i0, lanes.p1_row);
        let k_rows = lay.k.lane_rows(kb, base, zero, lanes.p2_row);
        let rh_rows = lay.rh.lane_rows(kb, base, zero, lanes.p1_row);
        let v_rows = lay.v.lane_rows(kb, base, zero, lanes.p1_row);
        TcForward {
            spec,
            lay,
            base,
            t,
            pty,
            ab,
            lanes,
            warp,
            g,
            q4,
            q2: g, // set by load_state (2·q4 is computed there, after the state slices)
            i0,
            q_rows,
            k_rows,
            v_rows,
            rh_rows,
            k_chunk,
            row0: Vec::new(),
            long_q_rows: Vec::new(),
            scale,
            heads,
            h,
            kd: tile.k,
            vd: tile.v,
            kg: spec.k,
            vg: spec.v,
            vs: tc_value_slice(spec), // columns of V this CTA serves
            c,
            ow,
            es: spec.dtype.size_bytes() as u32,
            w_count,
            threads: 32 * w_count,
            tail: !exact_dims(spec),
        }
    }

    /// R_w = H0[b,h] rows 16w.. (or 0) in `mma` accumulators, plus the earlier segments'
    /// states (segmented op); R̃ = R rounded.
    fn load_state(
        &mut self,
        kb: &mut KernelBuilder,
        p: &ChunkwiseParams,
        (b, log2_gamma): (Reg, Reg),
        segment: Option<&Segment>,
    ) -> TcState {
        kb.comment("R_w = H0[b,h] rows 16w.. (or 0), in mma accumulators; R~ = R rounded");
        let bh = kb.mad_lo(b, self.heads, self.h);
        let state_bytes = kb.mul_wide(bh, self.kg * self.vg * 4);
        // 16-row state slices per warp; slice j of warp w holds rows 16(w + j·W)..
        let slices = (self.kd / 16 / self.w_count).max(1);
        let raccs: Vec<AccTileF32> = (0..slices)
            .map(|_| AccTileF32::zeros(kb, self.vs))
            .collect();
        let slice_rows = self.warp_rows(kb, slices);
        // Element (16w + g, 2q) of the state: the lane's first f32 pair.
        let my_row = kb.add(self.i0, self.g);
        self.q2 = kb.shl(self.q4, 1u32);
        // With V split over the grid's z axis, this CTA's columns start at vs·z.
        let v_col0 = (self.vs < self.vd).then(|| {
            let z = two_phase::value_slice_index(kb, self.spec);
            kb.mul_lo(z, self.vs)
        });
        let my_col = match v_col0 {
            Some(c0) => kb.add(self.q2, c0),
            None => self.q2,
        };
        let my_elem = kb.mad_lo(my_row, self.vg, my_col);
        let my_elem_bytes = kb.mul_wide(my_elem, 4u32);
        let state = TcState {
            raccs,
            slice_rows,
            my_row,
            my_col,
            my_elem_bytes,
            state_bytes,
            v_col0,
        };
        let state_role = role(kb, self.warp, self.kd / 16, self.w_count);
        let h0_raw = kb.ld_param(&p.h0);
        let has_h0 = kb.setp(Cmp::Ne, h0_raw, 0u64);
        let no_h0 = kb.label();
        kb.bra_if(has_h0, true, no_h0);
        let h0 = kb.global_ptr(&p.h0);
        let h0_bh = kb.add(h0, state_bytes);
        let h0_at = kb.add(h0_bh, my_elem_bytes);
        self.state_pairs(
            kb,
            &state,
            |kb, f, i, at, tail| {
                let x = match tail {
                    Some((col, limit)) => {
                        load_f32_masked(kb, (Dtype::F32, 2), at, col, limit, self.vg)
                    }
                    None => kb.ld_vec(Space::Global, Ty::F32, 2, at),
                };
                kb.assign(f[i], x[0]);
                kb.assign(f[i + 1], x[1]);
            },
            h0_at,
        );
        kb.place(no_h0);
        if let Some(seg) = segment {
            self.fold_segments(kb, seg, &state, (log2_gamma, bh));
        }
        self.store_rh(kb, &state, false);
        if let Some(skip) = state_role {
            kb.place(skip);
        }
        kb.bar_sync(0);
        state
    }

    /// The warp's `n` row blocks of 16 rows: 16(w + j·W) for j < n.
    fn warp_rows(&self, kb: &mut KernelBuilder, n: u32) -> Vec<Reg> {
        (0..n)
            .map(|j| {
                if j == 0 {
                    self.i0
                } else {
                    kb.add(self.i0, 16 * self.w_count * j)
                }
            })
            .collect()
    }

    /// Run `body(kb, fragment, first index, global address, tail)` for each f32 pair the
    /// lane holds of the state, at `at` (its element 0) in a `[K][V]` f32 tensor; `tail` is
    /// the pair's column and row limit when the tile is padded.
    fn state_pairs(
        &self,
        kb: &mut KernelBuilder,
        state: &TcState,
        mut body: impl FnMut(&mut KernelBuilder, &[Reg; 4], usize, Address, Option<(Reg, Reg)>),
        at: Reg,
    ) {
        let vg = self.vg;
        let slice_bytes = |j: usize| i64::from(16 * self.w_count * j as u32 * vg * 4);
        for (j, racc) in state.raccs.iter().enumerate() {
            for (nt, f) in racc.frags.iter().enumerate() {
                for half in 0..2u32 {
                    let off = i64::from(nt as u32 * 32 + half * 8 * vg * 4) + slice_bytes(j);
                    let addr = Address::reg(at, off);
                    let tail = self.tail.then(|| {
                        let ahead = half * 8 + 16 * self.w_count * j as u32;
                        let limit = state_row_limit(kb, state.my_row, ahead, (self.kg, vg));
                        let col = kb.add(state.my_col, 8 * nt as u32);
                        (col, limit)
                    });
                    body(kb, f, 2 * half as usize, addr, tail);
                }
            }
        }
    }

    /// Segmented op: fold the earlier segments' states into R (the workspace holds padded
    /// states: offsets in a [kd][vd] tile).
    fn fold_segments(
        &self,
        kb: &mut KernelBuilder,
        seg: &Segment,
        state: &TcState,
        (log2_gamma, bh): (Reg, Reg),
    ) {
        let (ws_elem_bytes, ws_slice_bytes) = if self.tail {
            let e = kb.mad_lo(state.my_row, self.vd, state.my_col);
            let at = kb.mul_wide(e, 4u32);
            (at, 16 * self.w_count * self.vd * 4)
        } else {
            (state.my_elem_bytes, 16 * self.w_count * self.vg * 4)
        };
        for (j, racc) in state.raccs.iter().enumerate() {
            let at = if j == 0 {
                ws_elem_bytes
            } else {
                kb.add(ws_elem_bytes, u64::from(ws_slice_bytes * j as u32))
            };
            seg.fold(kb, self.spec, log2_gamma, (bh, at), FoldInto::Acc(racc));
        }
    }

    /// q, k, v, o as the tiles see them (v and o from this CTA's first column on), o's
    /// per-thread 16-byte chunks and the padded tiles' real columns.
    fn out_rows(
        &self,
        kb: &mut KernelBuilder,
        p: &ChunkwiseParams,
        v_col0: Option<Reg>,
    ) -> OutRows {
        let q = kb.global_ptr(&p.q);
        let k = kb.global_ptr(&p.k);
        let v = kb.global_ptr(&p.v);
        let o = kb.global_ptr(&p.o);
        let (v, o) = match v_col0 {
            Some(c0) => {
                let col_bytes = kb.mul_wide(c0, self.es);
                (kb.add(v, col_bytes), kb.add(o, col_bytes))
            }
            None => (v, o),
        };
        let o_per_row = self.vs / 8;
        let o_ch = kb.and(self.t, o_per_row - 1);
        let o_row0 = kb.shr(self.t, o_per_row.trailing_zeros());
        let o_ch_bytes = kb.mul_wide(o_ch, 16u32);
        let o_ch_at = kb.add(o, o_ch_bytes);
        // Padded tiles: the real columns of the q, k (K) and v, o (V) tiles, and o's chunk column.
        let tails = self.tail.then(|| {
            let kt = ColumnTail::new(kb, None, self.kg);
            let vt = ColumnTail::new(kb, v_col0, self.vg);
            (kt, vt)
        });
        let o_ch8 = self.tail.then(|| kb.shl(o_ch, 3u32));
        OutRows {
            q,
            k,
            v,
            o,
            o_per_row,
            o_ch,
            o_row0,
            o_ch_at,
            o_ch8,
            tails,
        }
    }

    /// Long whole-tile chunks: the first row of each of the warp's row blocks and q's lane
    /// rows for each.
    fn long_rows(&mut self, kb: &mut KernelBuilder, streamed: Option<StreamedPlan>) {
        if self.c > WHOLE_SCORE_TILE && streamed.is_none() {
            self.row0 = self.warp_rows(kb, self.c / 16 / self.w_count);
        }
        self.long_q_rows = self
            .row0
            .iter()
            .map(|&r0| self.lay.q.lane_rows(kb, self.base, r0, self.lanes.p1_row))
            .collect();
    }

    /// The streamed path's chunk context.
    fn streamed<'s>(
        &self,
        plan: StreamedPlan,
        out: &OutRows,
        raccs: &'s [AccTileF32],
    ) -> StreamedChunk<'s> {
        StreamedChunk {
            plan,
            lay: self.lay,
            base: self.base,
            t: self.t,
            threads: self.threads,
            warp: self.warp,
            g: self.g,
            q4: self.q4,
            q2: self.q2,
            lanes: self.lanes,
            pty: self.pty,
            ab: self.ab,
            scale: self.scale,
            heads: self.heads,
            h: self.h,
            q: out.q,
            k: out.k,
            v: out.v,
            o: out.o,
            kd: self.kd,
            dims: (self.kg, self.vg),
            tails: out.tails,
            vs: self.vs,
            c: self.c,
            es: self.es,
            k_rows: self.k_rows,
            v_rows: self.v_rows,
            rh_rows: self.rh_rows,
            k_chunk: self.k_chunk,
            w_count: self.w_count,
            raccs,
        }
    }

    /// `cp.async` the chunk's q, k, v rows (rows ≥ L zero-filled).
    fn stage_chunk(&self, kb: &mut KernelBuilder, out: &OutRows, (tok_c, len): (Reg, Reg)) {
        kb.comment("cp.async q, k, v rows of the chunk (rows >= L zero-filled)");
        let lay = &self.lay;
        let (kt, vt) = (out.tails.map(|t| t.0), out.tails.map(|t| t.1));
        for (tile, src, row_elems, cols) in [
            (lay.q, out.q, self.kg, kt),
            (lay.k, out.k, self.kg, kt),
            (lay.v, out.v, self.vg, vt),
        ] {
            let rows = GlobalRows {
                src,
                row_bytes: row_elems * self.es,
                tok_c,
                heads: self.heads,
                h: self.h,
                len,
            };
            stage_tile_masked(kb, tile, self.base, self.t, self.threads, &rows, cols);
        }
        kb.cp_async_commit();
        kb.cp_async_wait(0);
        kb.bar_sync(0);
    }

    /// `acc (16 × 16·n) += Q_rows K[cols..]ᵀ` over K: the score strip of the lane's q rows
    /// against k rows `col0..`.
    fn scores_strip(&self, kb: &mut KernelBuilder, sacc: &AccTileF32, q_rows: Reg, col0: u32) {
        let lay = &self.lay;
        for ks in 0..self.kd / 16 {
            let qa = lay
                .q
                .ldmatrix_x4(kb, self.pty, false, q_rows, 0, 2 * ks, self.lanes.p1_x);
            for np in 0..sacc.frags.len() as u32 / 2 {
                let kf = lay.k.ldmatrix_x4(
                    kb,
                    self.pty,
                    false,
                    self.k_rows,
                    col0 + 16 * np,
                    2 * ks,
                    self.lanes.p2_x,
                );
                sacc.mma_pair(kb, self.ab, 2 * np as usize, qa, kf);
            }
        }
    }

    /// `oacc += Q_rows R̃[:, slice]`, then `oacc ← ξ ⊙ oacc` (rows `lo`, `hi`).
    fn inter_chunk(&self, kb: &mut KernelBuilder, oacc: &AccTileF32, q_rows: Reg, slice: u32) {
        let lay = &self.lay;
        for ks in 0..self.kd / 16 {
            let qa = lay
                .q
                .ldmatrix_x4(kb, self.pty, false, q_rows, 0, 2 * ks, self.lanes.p1_x);
            let chunks = (0..self.ow / 16).map(|np| Operand::from(self.ow / 8 * slice + 2 * np));
            let rh = (&lay.rh, self.rh_rows, &self.lanes);
            mma_state_step(kb, oacc, (qa, ks), rh, chunks, (self.pty, self.ab));
        }
    }

    /// `oacc += S̃ V[row0.., slice]` for the packed score fragments `sa` (16 rows of V each).
    fn intra_chunk(
        &self,
        kb: &mut KernelBuilder,
        oacc: &AccTileF32,
        sa: &[[Reg; 4]],
        row0: u32,
        slice: u32,
    ) {
        for (ks, a) in sa.iter().enumerate() {
            for np in 0..self.ow / 16 {
                let (nt, chunk) = (np as usize * 2, self.ow / 8 * slice + 2 * np);
                let vf = self.lay.v.ldmatrix_x4(
                    kb,
                    self.pty,
                    true,
                    self.v_rows,
                    row0 + 16 * ks as u32,
                    chunk,
                    self.lanes.p1_x,
                );
                oacc.mma_pair(kb, self.ab, nt, *a, vf);
            }
        }
    }

    /// Rows 16w.. of a chunk of at most [`WHOLE_SCORE_TILE`] rows: S = Q Kᵀ ⊙ D whole, then
    /// O = s (ξ ⊙ Q R̃ + S̃ V), `ow` columns at a time, into the o tile.
    fn short_chunk_rows(&self, kb: &mut KernelBuilder) {
        let (lay, c, ow) = (&self.lay, self.c, self.ow);
        kb.comment("rows 16w..: S = Q K^T on tensor cores");
        let rows_role = role(kb, self.warp, c / 16, self.w_count);
        let sacc = AccTileF32::zeros(kb, c);
        self.scores_strip(kb, &sacc, self.q_rows, 0);
        kb.comment("S[i][j] = (i >= j) ? gamma^(i-j) S[i][j] : 0 (selp: stale rows cannot leak)");
        let d1 = kb.add(self.i0, self.g);
        let diag = Diagonal::new(kb, d1, self.q2);
        let masked = diag.mask(kb, &sacc, self.base, lay.decay, 0);
        let sa = masked.to_a_fragments(kb, self.ab);
        kb.comment(format!(
            "O = s (xi . Q R~ + S~ V), xi_i = gamma^(i+1), {ow} columns at a time"
        ));
        let (xi_lo, xi_hi) = xi_rows(kb, (self.base, lay.decay), d1);
        // S is packed before any O accumulator is live, and O is built `ow` columns at a time,
        // so at most S~ (C/4), one O slice (ow/2) and the state (V/2 per slice) are live.
        for slice in 0..self.vs / ow {
            let oacc = AccTileF32::zeros(kb, ow);
            self.inter_chunk(kb, &oacc, self.q_rows, slice);
            oacc.scale_rows(kb, xi_lo, xi_hi);
            self.intra_chunk(kb, &oacc, &sa, 0, slice);
            self.store_o(kb, &oacc, self.i0, slice);
        }
        if let Some(skip) = rows_role {
            kb.place(skip);
        }
    }

    /// The rows phase of a chunk longer than [`WHOLE_SCORE_TILE`]: every warp owns C/(16W)
    /// row blocks of 16 rows, and for each builds `O = s (ξ ⊙ Q R̃ + Σ_J S̃_J V_J)` with the
    /// score strip `S_J = Q K_Jᵀ ⊙ D` made, masked and packed 64 columns (J) at a time;
    /// column blocks wholly above the diagonal are skipped (a warp-uniform branch).
    fn long_chunk_rows(&self, kb: &mut KernelBuilder) {
        let lay = &self.lay;
        for (rb, (&i0, &q_rows)) in self.row0.iter().zip(&self.long_q_rows).enumerate() {
            kb.comment(format!(
                "row block {rb}: rows 16(w + {rb}W).., S built 64 columns at a time"
            ));
            let d1 = kb.add(i0, self.g);
            let diag = Diagonal::new(kb, d1, self.q2);
            let (xi_lo, xi_hi) = xi_rows(kb, (self.base, lay.decay), d1);
            // Index of this warp's row block among the chunk's 16-row blocks.
            let block = kb.add(self.warp, self.w_count * rb as u32);
            for slice in 0..self.vs / self.ow {
                let oacc = AccTileF32::zeros(kb, self.ow);
                self.inter_chunk(kb, &oacc, q_rows, slice);
                oacc.scale_rows(kb, xi_lo, xi_hi);
                for cb in 0..self.c / 64 {
                    // Columns 64cb.. lie wholly above the diagonal of rows 16·block.. when
                    // 16·block + 15 < 64cb.
                    let skip = (cb > 0).then(|| {
                        let label = kb.label();
                        let above = kb.setp(Cmp::Lt, block, 4 * cb);
                        kb.bra_if(above, false, label);
                        label
                    });
                    let sacc = AccTileF32::zeros(kb, 64);
                    self.scores_strip(kb, &sacc, q_rows, 64 * cb);
                    let masked = diag.mask(kb, &sacc, self.base, lay.decay, 64 * cb);
                    let sa = masked.to_a_fragments(kb, self.ab);
                    self.intra_chunk(kb, &oacc, &sa, 64 * cb, slice);
                    if let Some(label) = skip {
                        kb.place(label);
                    }
                }
                self.store_o(kb, &oacc, i0, slice);
            }
        }
    }

    /// O ← s·O into the o tile: rows `r0`.. of the chunk, columns of O strip `slice`.
    fn store_o(&self, kb: &mut KernelBuilder, oacc: &AccTileF32, r0: Reg, slice: u32) {
        oacc.scale(kb, self.scale);
        let chunk = self.ow / 8 * slice;
        let (g, q4) = (self.g, self.q4);
        self.lay
            .o
            .store_acc(kb, self.base, oacc, self.ab, r0, g, q4, chunk);
    }

    /// State rows 16w..: R ← γ^L R + (Kᵀ ⊙ ζ) V, ζ_j = γ^(L−1−j).
    fn update_state(&self, kb: &mut KernelBuilder, raccs: &[AccTileF32], len: Reg) {
        let (lay, c) = (&self.lay, self.c);
        kb.comment("state rows 16w..: R <- gamma^L R + (K^T . zeta) V, zeta_j = gamma^(L-1-j)");
        let (_, g_len) = table_entry(kb, (self.base, lay.decay), len);
        let state_role = role(kb, self.warp, self.kd / 16, self.w_count);
        for racc in raccs {
            racc.scale(kb, g_len);
        }
        // zeta index + C = L + C - 1 - j, j = 16 ks + 2q + e (see `zeta_quad`).
        let z1 = kb.add(len, c - 1);
        let z_base = kb.sub(z1, self.q2);
        for ks in 0..c / 16 {
            let v = StateV {
                tile: lay.v,
                rows: self.v_rows,
                row0: 16 * ks,
                lane_x: self.lanes.p1_x,
                cols: self.vs,
            };
            // Slice j's rows of K^T: columns 16(w + jW).. of the k tile.
            let k = StateK {
                tile: lay.k,
                rows: self.k_rows,
                lane_x: self.lanes.p2_x,
                chunk0: self.k_chunk,
                stride: 2 * self.w_count,
            };
            let zeta =
                |kb: &mut KernelBuilder| zeta_quad(kb, z_base, 16 * ks, c, (self.base, lay.decay));
            accumulate_state_slices(kb, raccs, (&k, &v), zeta, (self.pty, self.ab));
        }
        if let Some(skip) = state_role {
            kb.place(skip);
        }
        kb.bar_sync(0);
    }

    /// R̃ ← R rounded (every warp holding state rows; `roles`: branch around it the warps
    /// that hold none).
    fn store_rh(&self, kb: &mut KernelBuilder, state: &TcState, roles: bool) {
        let state_role = if roles {
            role(kb, self.warp, self.kd / 16, self.w_count)
        } else {
            None
        };
        for (racc, &r0) in state.raccs.iter().zip(&state.slice_rows) {
            self.lay
                .rh
                .store_acc(kb, self.base, racc, self.ab, r0, self.g, self.q4, 0);
        }
        if let Some(skip) = state_role {
            kb.place(skip);
        }
    }

    /// o rows < L leave the o tile as whole 16-byte pieces.
    fn copy_out(&self, kb: &mut KernelBuilder, out: &OutRows, (tok_c, len): (Reg, Reg)) {
        for round in 0..self.c * out.o_per_row / self.threads {
            let row = kb.add(out.o_row0, round * self.threads / out.o_per_row);
            let inside = kb.setp(Cmp::Lt, row, len);
            let tok = kb.add(tok_c, row);
            let th = kb.mad_lo(tok, self.heads, self.h);
            let dst = kb.mad_wide(th, self.vg * self.es, out.o_ch_at);
            let src = self.lay.o.chunk_addr(kb, self.base, row, out.o_ch);
            let cols = out.o_ch8.zip(out.tails.map(|t| t.1));
            copy_chunk_out(kb, src, dst, inside, cols);
        }
        kb.bar_sync(0);
    }

    /// H_T[b,h] rows 16w.. = R_w when asked for (the last segment only, segmented).
    fn store_ht(
        &self,
        kb: &mut KernelBuilder,
        p: &ChunkwiseParams,
        state: &TcState,
        segment: Option<&Segment>,
    ) {
        kb.comment("H_T[b,h] rows 16w.. = R_w when asked for");
        let done = kb.label();
        if self.kd / 16 < self.w_count {
            let idle = kb.setp(Cmp::Ge, self.warp, self.kd / 16);
            kb.bra_if(idle, false, done);
        }
        let ht_raw = kb.ld_param(&p.ht);
        let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
        kb.bra_if(has_ht, true, done);
        if let Some(seg) = segment {
            seg.skip_unless_last(kb, done);
        }
        let ht = kb.global_ptr(&p.ht);
        let ht_bh = kb.add(ht, state.state_bytes);
        let ht_at = kb.add(ht_bh, state.my_elem_bytes);
        self.state_pairs(
            kb,
            state,
            |kb, f, i, at, tail| match tail {
                Some((col, limit)) => {
                    let xs = [f[i], f[i + 1]];
                    store_from_f32_masked(kb, Dtype::F32, at, &xs, col, limit, self.vg);
                }
                None => kb.st_vec(Space::Global, Ty::F32, at, &[f[i].into(), f[i + 1].into()]),
            },
            ht_at,
        );
        kb.place(done);
    }
}
