//! The tensor-core chunkwise forward for chunks whose whole q, k and v tiles do not fit one
//! CTA: C = 256 with K ≥ 128, and C = 128 with K = 256 on sm_80. Same math, parameters,
//! grid, warps and f32 register state as [`super::tc`]; only the order in which a
//! chunk's rows meet the tensor cores differs:
//!
//! ```text
//! R ← γ^L R                                     (R̃, its 16-bit copy, stays the chunk-start R)
//! for each pass p of P query rows [pP, pP+P):
//!     stage q rows of the pass; k, v blocks J of 64 rows as the pass first needs them
//!     warp (rb, cg):  O = s (ξ ⊙ Q_rb R̃[:, cg] + Σ_{J ≤ diag} (Q_rb K_Jᵀ ⊙ D) V_J[:, cg])
//!     every warp, for each block J new in this pass:  R_w += (K_Jᵀ ⊙ ζ_J)_w V_J
//!     o rows of the pass leave through shared memory as whole 16-byte rows
//! ```
//!
//! P = 16·W/G rows with G column groups of O (G = 2 for K = 256, whose warps already hold two
//! 16-row state slices, so each O strip is 32 columns; else G = 1). k and v blocks stay
//! resident in shared memory for the whole chunk when [`StreamedPlan::slots`] = C/64 fit;
//! otherwise one slot is refilled for every block a pass needs, so later passes re-read
//! earlier blocks (from L2: this CTA read them moments before). The state R is scaled by
//! γ^L once per chunk and gains each block's term as soon as the block arrives, while every
//! pass reads the chunk-start R̃: exactly the chunkwise recurrence, in a different order.

use crate::blocks::decay::table_entry;
use crate::blocks::global::GlobalRows;
use crate::blocks::staging::{ColumnTail, copy_chunk_out, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments, SharedTile16};
use crate::dsl::{Cmp, KernelBuilder, Operand, Reg, Ty};
use crate::math::chunk_tiling::{BLOCK, SCORE_COLS, StreamedPlan, TcLayout};
use crate::math::scores::{Diagonal, xi_rows};
use crate::math::state_update::{StateV, accumulate_state_step, mma_state_step, zeta_quad};

/// Everything one chunk of the streamed path needs, fixed before the sequence loop.
pub(super) struct StreamedChunk<'a> {
    pub plan: StreamedPlan,
    pub lay: TcLayout,
    pub base: Reg,
    pub t: Reg,
    pub threads: u32,
    pub warp: Reg,
    pub g: Reg,
    pub q4: Reg,
    pub q2: Reg,
    pub lanes: LaneFragments,
    pub pty: Ty,
    pub ab: Ty,
    pub scale: Reg,
    pub heads: Reg,
    pub h: Reg,
    /// q, k, v, o in global memory (v and o from this CTA's first column on).
    pub q: Reg,
    pub k: Reg,
    pub v: Reg,
    pub o: Reg,
    /// K of the tiles (padded past the real K for dims outside the catalog).
    pub kd: u32,
    /// The real (K, V): global row lengths.
    pub dims: (u32, u32),
    /// The real columns of padded K and V tiles (`None` at catalog dims).
    pub tails: Option<(ColumnTail, ColumnTail)>,
    pub vs: u32,
    pub c: u32,
    pub es: u32,
    /// Per-lane row bases of the k, v and R̃ tiles (row 0).
    pub k_rows: Reg,
    pub v_rows: Reg,
    pub rh_rows: Reg,
    /// 16w / 8: the k tile's chunk holding state row 16w.
    pub k_chunk: Reg,
    pub w_count: u32,
    /// The warp's f32 state slices (rows 16(w + jW)..).
    pub raccs: &'a [AccTileF32],
}

/// Per-warp registers of the rows role, computed once.
pub(super) struct RowsRole {
    /// 16·(row block within a pass).
    r_in_pass: Reg,
    /// First R̃ / o chunk of the warp's column group.
    col_chunk: Reg,
    q_rows: Reg,
}

/// What every pass of a chunk reads.
struct Pass<'r> {
    role: &'r RowsRole,
    /// The chunk's first token and length.
    at: (Reg, Reg),
    /// L + C − 1 − 2q: the lane's ζ index base.
    z_base: Reg,
    zero: Reg,
}

/// The warp's rows of one pass: first row, accumulator row d1 = row0 + g, its R̃ / o column
/// chunks and the O accumulator.
struct PassRows {
    row0: Reg,
    d1: Reg,
    col_chunks: Vec<Reg>,
    oacc: AccTileF32,
}

impl StreamedChunk<'_> {
    /// The warp's row block and column group.
    pub(super) fn rows_role(&self, kb: &mut KernelBuilder) -> RowsRole {
        let blocks = self.plan.pass_rows / 16;
        let rb = kb.and(self.warp, blocks - 1);
        let cg = kb.shr(self.warp, blocks.trailing_zeros());
        let r_in_pass = kb.shl(rb, 4u32);
        let col_chunk = kb.mul_lo(cg, self.vs / self.plan.groups / 8);
        let q_rows = self
            .lay
            .q
            .lane_rows(kb, self.base, r_in_pass, self.lanes.p1_row);
        RowsRole {
            r_in_pass,
            col_chunk,
            q_rows,
        }
    }

    /// `cp.async` a tile's rows of a token-major tensor from chunk row `first` on into
    /// `tile` at `base` (rows at or past the chunk's `len` zero-filled).
    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        kb: &mut KernelBuilder,
        tile: SharedTile16,
        base: Reg,
        (src, cols, tail): (Reg, u32, Option<ColumnTail>),
        first: Reg,
        (tok_c, len): (Reg, Reg),
    ) {
        let past = kb.max(len, first);
        let rows_left = kb.sub(past, first);
        let tok = kb.add(tok_c, first);
        let rows = GlobalRows {
            src,
            row_bytes: cols * self.es,
            tok_c: tok,
            heads: self.heads,
            h: self.h,
            len: rows_left,
        };
        stage_tile_masked(kb, tile, base, self.t, self.threads, &rows, tail);
    }

    /// Byte offset of slot `slot` in the k tile and in the v tile.
    fn slot_bytes(&self, kb: &mut KernelBuilder, slot: Reg) -> (Reg, Reg) {
        let k = kb.mul_lo(slot, BLOCK * self.lay.k.pitch());
        let v = kb.mul_lo(slot, BLOCK * self.lay.v.pitch());
        (k, v)
    }

    /// Stage k and v block `j` (rows 64j.. of the chunk) into the slot at `slot_at`.
    fn stage_block(&self, kb: &mut KernelBuilder, j: Reg, slot_at: (Reg, Reg), at: (Reg, Reg)) {
        let first = kb.shl(j, BLOCK.trailing_zeros());
        let k_base = kb.add(self.base, slot_at.0);
        let v_base = kb.add(self.base, slot_at.1);
        let k_tile = SharedTile16 {
            rows: BLOCK,
            ..self.lay.k
        };
        let v_tile = SharedTile16 {
            rows: BLOCK,
            ..self.lay.v
        };
        let (kg, vg) = self.dims;
        let (kt, vt) = (self.tails.map(|t| t.0), self.tails.map(|t| t.1));
        self.stage(kb, k_tile, k_base, (self.k, kg, kt), first, at);
        self.stage(kb, v_tile, v_base, (self.v, vg, vt), first, at);
    }

    /// Emit one chunk: rows `tok_c..tok_c + len` of this CTA's sequence. Passes past L are
    /// never entered (the pass loop runs to L); within a pass, key blocks run to the last
    /// one the pass's rows reach.
    pub(super) fn emit(&self, kb: &mut KernelBuilder, role: &RowsRole, len: Reg, tok_c: Reg) {
        let p_rows = self.plan.pass_rows;
        kb.comment("R <- gamma^L R once; R~ keeps the chunk-start state for every pass");
        let (_, g_len) = table_entry(kb, (self.base, self.lay.decay), len);
        for racc in self.raccs {
            racc.scale(kb, g_len);
        }
        // zeta index + C = L + C - 1 - j, clamped to C (γ^0) past L (zero-filled rows).
        let z1 = kb.add(len, self.c - 1);
        let z_base = kb.sub(z1, self.q2);
        let zero = kb.mov(Ty::U32, 0u32);
        let pass = Pass {
            role,
            at: (tok_c, len),
            z_base,
            zero,
        };
        kb.comment(format!("passes of {p_rows} query rows, up to L"));
        kb.for_range(0u32, len, p_rows, |kb, p0| self.pass(kb, &pass, p0));
    }

    /// Whether every k, v block of a chunk stays resident in its own slot.
    fn resident(&self) -> bool {
        self.plan.slots == self.c / BLOCK
    }

    /// One pass of query rows `p0..`: stage q and the pass's new k, v blocks; O = s (ξ ⊙ Q R̃
    /// + Σ_j S̃_j V_j); the new blocks' state terms; o rows out.
    fn pass(&self, kb: &mut KernelBuilder, x: &Pass, p0: Reg) {
        let (role, at, zero) = (x.role, x.at, x.zero);
        let new_per_pass = self.plan.pass_rows / BLOCK;
        let first_new = kb.shr(p0, BLOCK.trailing_zeros());
        kb.comment("stage the pass's q rows and its first k, v blocks");
        let q_src = (self.q, self.dims.0, self.tails.map(|t| t.0));
        self.stage(kb, self.lay.q, self.base, q_src, p0, at);
        let new_blocks: Vec<Reg> = (0..new_per_pass)
            .map(|i| {
                if i == 0 {
                    first_new
                } else {
                    kb.add(first_new, i)
                }
            })
            .collect();
        if self.resident() {
            for &j in &new_blocks {
                let slot_at = self.slot_bytes(kb, j);
                self.stage_block(kb, j, slot_at, at);
            }
        } else {
            self.stage_block(kb, zero, (zero, zero), at);
        }
        kb.cp_async_commit();
        kb.cp_async_wait(0);
        kb.bar_sync(0);

        let rows = self.inter_pass(kb, role, p0);
        let blocks = kb.add(first_new, new_per_pass);
        kb.comment("key blocks j = 0..: S = Q K_j^T . D, then O += S~ V_j");
        kb.for_range(0u32, blocks, 1, |kb, j| self.key_block(kb, x, &rows, j));

        kb.comment("o rows of the pass: scale, round, into the o tile");
        rows.oacc.scale(kb, self.scale);
        self.lay.o.store_acc(
            kb,
            self.base,
            &rows.oacc,
            self.ab,
            role.r_in_pass,
            self.g,
            self.q4,
            role.col_chunk,
        );
        // The pass's new blocks are still in their slots (a refilled slot holds the last,
        // and only, new block): their state terms now, with no O accumulator live.
        for &j in &new_blocks {
            let slot = if self.resident() { j } else { zero };
            self.update_state(kb, j, slot, x.z_base);
        }
        kb.bar_sync(0);
        self.copy_out(kb, p0, at);
        kb.bar_sync(0);
    }

    /// O = ξ ⊙ Q R̃ over the warp's columns, for the warp's rows of the pass at `p0`.
    fn inter_pass(&self, kb: &mut KernelBuilder, role: &RowsRole, p0: Reg) -> PassRows {
        kb.comment("O = xi . Q R~ over the warp's columns");
        let ow = self.vs / self.plan.groups;
        let row0 = kb.add(role.r_in_pass, p0);
        let d1 = kb.add(row0, self.g);
        let (xi_lo, xi_hi) = xi_rows(kb, (self.base, self.lay.decay), d1);
        let col_chunks: Vec<Reg> = (0..ow / 16)
            .map(|np| kb.add(role.col_chunk, 2 * np))
            .collect();
        let oacc = AccTileF32::zeros(kb, ow);
        for ks in 0..self.kd / 16 {
            let qa = self.q_frag(kb, role, ks);
            let chunks = col_chunks.iter().map(|&c| Operand::from(c));
            let rh = (&self.lay.rh, self.rh_rows, &self.lanes);
            mma_state_step(kb, &oacc, (qa, ks), rh, chunks, (self.pty, self.ab));
        }
        oacc.scale_rows(kb, xi_lo, xi_hi);
        PassRows {
            row0,
            d1,
            col_chunks,
            oacc,
        }
    }

    /// The lane's q fragments of the warp's rows for the K step `ks`.
    fn q_frag(&self, kb: &mut KernelBuilder, role: &RowsRole, ks: u32) -> [Reg; 4] {
        self.lay
            .q
            .ldmatrix_x4(kb, self.pty, false, role.q_rows, 0, 2 * ks, self.lanes.p1_x)
    }

    /// Key block j of the pass: (refill its slot,) S = Q K_jᵀ ⊙ D, O += S̃ V_j.
    fn key_block(&self, kb: &mut KernelBuilder, x: &Pass, rows: &PassRows, j: Reg) {
        let zero = x.zero;
        let slot = if self.resident() {
            j
        } else {
            kb.comment("refill the slot with block j (block 0 came with q)");
            let first = kb.setp(Cmp::Eq, j, 0u32);
            let filled = kb.label();
            kb.bra_if(first, false, filled);
            kb.bar_sync(0);
            self.stage_block(kb, j, (zero, zero), x.at);
            kb.cp_async_commit();
            kb.cp_async_wait(0);
            kb.bar_sync(0);
            kb.place(filled);
            zero
        };
        let j_row = kb.shl(j, BLOCK.trailing_zeros());
        // A pass longer than a block reaches blocks whose columns lie wholly above
        // some warps' rows (row0 + 15 < 64j): those warps skip them.
        let skip = (self.plan.pass_rows > BLOCK).then(|| {
            let label = kb.label();
            let last_row = kb.add(rows.row0, 15u32);
            let above = kb.setp(Cmp::Lt, last_row, j_row);
            kb.bra_if(above, false, label);
            label
        });
        let (k_off, v_off) = self.slot_bytes(kb, slot);
        let k_rows = kb.add(self.k_rows, k_off);
        let v_rows = kb.add(self.v_rows, v_off);
        // Rows relative to the block's first column: never negative here.
        let d_rel = kb.sub(rows.d1, j_row);
        let diag = Diagonal::new(kb, d_rel, self.q2);
        for sb in 0..BLOCK / SCORE_COLS {
            let col0 = SCORE_COLS * sb; // first column within the block
            let sacc = AccTileF32::zeros(kb, SCORE_COLS);
            for ks in 0..self.kd / 16 {
                let qa = self.q_frag(kb, x.role, ks);
                for np in 0..SCORE_COLS / 16 {
                    let kf = self.lay.k.ldmatrix_x4(
                        kb,
                        self.pty,
                        false,
                        k_rows,
                        col0 + 16 * np,
                        2 * ks,
                        self.lanes.p2_x,
                    );
                    sacc.mma_pair(kb, self.ab, 2 * np as usize, qa, kf);
                }
            }
            let masked = diag.mask(kb, &sacc, self.base, self.lay.decay, col0);
            let sa = masked.to_a_fragments(kb, self.ab);
            for (ks, a) in sa.iter().enumerate() {
                for (np, &chunk) in rows.col_chunks.iter().enumerate() {
                    let vf = self.lay.v.ldmatrix_x4(
                        kb,
                        self.pty,
                        true,
                        v_rows,
                        col0 + 16 * ks as u32,
                        chunk,
                        self.lanes.p1_x,
                    );
                    rows.oacc.mma_pair(kb, self.ab, 2 * np, *a, vf);
                }
            }
        }
        if let Some(label) = skip {
            kb.place(label);
        }
    }

    /// `R_w += (K_jᵀ ⊙ ζ_j)_w V_j` for every state slice of the warp, block `j` in slot
    /// `slot`.
    fn update_state(&self, kb: &mut KernelBuilder, j: Reg, slot: Reg, z_base: Reg) {
        kb.comment("state: R += (K_j^T . zeta) V_j, zeta = gamma^(L-1-row)");
        let (k_off, v_off) = self.slot_bytes(kb, slot);
        let k_rows = kb.add(self.k_rows, k_off);
        let v_rows = kb.add(self.v_rows, v_off);
        let j_row = kb.shl(j, BLOCK.trailing_zeros());
        let z_j = kb.sub(z_base, j_row);
        for ks in 0..BLOCK / 16 {
            let zeta = zeta_quad(kb, z_j, 16 * ks, self.c, (self.base, self.lay.decay));
            let v = StateV {
                tile: self.lay.v,
                rows: v_rows,
                row0: 16 * ks,
                lane_x: self.lanes.p1_x,
                cols: self.vs,
            };
            for (slice, racc) in self.raccs.iter().enumerate() {
                // Slice `slice`'s rows of Kᵀ: columns 16(w + slice·W).. of the k tile.
                let kc: Operand = if slice == 0 {
                    self.k_chunk.into()
                } else {
                    kb.add(self.k_chunk, 2 * self.w_count * slice as u32).into()
                };
                let ka = self.lay.k.ldmatrix_x4(
                    kb,
                    self.pty,
                    true,
                    k_rows,
                    16 * ks,
                    kc,
                    self.lanes.p2_x,
                );
                accumulate_state_step(kb, racc, (ka, &zeta), &v, (self.pty, self.ab));
            }
        }
    }

    /// Copy the o tile's rows `r` with `p0 + r < len` to tokens `tok_c + p0 + r`.
    fn copy_out(&self, kb: &mut KernelBuilder, p0: Reg, (tok_c, len): (Reg, Reg)) {
        let per_row = self.vs / 8;
        let ch = kb.and(self.t, per_row - 1);
        let row0 = kb.shr(self.t, per_row.trailing_zeros());
        let ch_bytes = kb.mul_wide(ch, 16u32);
        let ch_at = kb.add(self.o, ch_bytes);
        let ch8 = self.tails.map(|_| kb.shl(ch, 3u32));
        let tok_p = kb.add(tok_c, p0);
        let len_p = kb.sub(len, p0); // the pass loop runs while p0 < len
        for round in 0..self.plan.pass_rows * per_row / self.threads {
            let row = kb.add(row0, round * self.threads / per_row);
            let inside = kb.setp(Cmp::Lt, row, len_p);
            let tok = kb.add(tok_p, row);
            let th = kb.mad_lo(tok, self.heads, self.h);
            let dst = kb.mad_wide(th, self.dims.1 * self.es, ch_at);
            let src = self.lay.o.chunk_addr(kb, self.base, row, ch);
            copy_chunk_out(kb, src, dst, inside, ch8.zip(self.tails.map(|t| t.1)));
        }
    }
}
