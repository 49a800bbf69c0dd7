//! The chunkwise forward's FMA path for chunks longer than shared memory holds whole
//! (C ∈ {128, 256}): the same math, parameters and grid as [`super`], with the
//! chunk walked in sub-blocks of B rows (B = 64, or 32 where 64 does not fit), so shared
//! memory holds one block of q, one of k and v, one B×B score tile and the state slice:
//!
//! ```text
//! for each chunk [c0, c0+L), blocks I, J of B rows (n = ⌈L/B⌉ blocks):
//!     for I < n:  O_I = ((s·Q_I) R) ⊙ ξ_I                       (R: the chunk's first state)
//!                 for J ≤ I:  O_I += ((s·Q_I) K_Jᵀ ⊙ D_IJ) V_J   D_IJ[i][j] = γ^(i−j), i ≥ j
//!     R ← γ^L R + Σ_J K_Jᵀ (V_J ⊙ ζ_J)                           ζ_j = γ^(L−1−j)
//! ```
//!
//! Blocks J < I are staged again from global memory for every I, and again (all but the last)
//! for the state update: global reads of k and v grow to about (n + 3)/2 times the minimum.
//! The decay table spans the whole chunk (γ^d, d = 0..=C), and offsets inside it are the
//! chunk-relative positions, so the result is the chunk-C form, not C/B chunks of B.

use crate::GenError;
use crate::blocks::cta::cta_row_head_thread;
use crate::blocks::decay::{TableFill, emit_decay_table, table_entry};
use crate::blocks::fma::{
    Acc4x4, StagedChunk, for_each_piece, product_piece, store_piece_rows, zero_acc,
};
use crate::dsl::{Address, Cmp, KernelBuilder, Reg, Space, Ty};
use crate::math::chunk_params::{ChunkwiseParams, chunk_rows_of, declare_params, for_each_chunk};
use crate::math::chunk_tiling::{SharedLayout, THREADS, exact_dims, tile_spec};
use crate::math::fma_chunk::o_rows;
use crate::math::fma_chunk::{FmaChunkStaging, load_state_slice};
use crate::math::kernel_head::start_kernel;
use crate::math::scores::{FmaScoreTiles, causal_scores_piece_fma};
use crate::math::state_update::{FmaStateTiles, update_state_fma};
use crate::spec::KernelSpec;

/// The shared tiles, as the shared window's comment names them.
const TILES: [&str; 5] = [
    "R [K,V]",
    "(sQ_I)^T [K,B]",
    "K_J^T [K,B]",
    "V_J [B,V]",
    "S_IJ^T [B,B]",
];
/// What the kernel computes, as its header says.
const FORMULA: &str = "O_I = ((sQ_I) R) . xi + sum_{J<=I} ((sQ_I) K_J^T . D_IJ) V_J ; R <- g^L R + sum_J K_J^T (V_J . zeta)";

/// What the per-chunk phases read, fixed before the sequence loop.
struct Blocked<'a> {
    spec: &'a KernelSpec,
    lay: SharedLayout,
    staging: FmaChunkStaging,
    t: Reg,
    base: Reg,
    scale: Reg,
    v_col0: Reg,
    heads_h: (Reg, Reg),
    /// (K padded, V slice, block rows B).
    dims: (u32, u32, u32),
}

/// Emit the blocked FMA chunkwise forward for `spec` (validated by the caller), with blocks of
/// `blk` rows and `vs` columns of V per CTA.
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec, blk: u32, vs: u32) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded K (kd); global rows keep the real (kg, vg).
    let kd = tile_spec(spec).k;
    let (kg, vg) = (spec.k, spec.v);
    let tail = (!exact_dims(spec)).then_some((kg, vg));
    let c = spec.chunk.unwrap_or_default();
    let lay = SharedLayout::blocked(kd, vs, blk, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let title = format!("retention chunkwise forward (FMA, blocks of {blk})");
    let mut kb = start_kernel(spec, &title, FORMULA, (THREADS, true));

    // The two-phase forward never takes the blocked path: `segment_fold::check_envelope`
    // refuses every FMA spec whose chunk does not fit whole.
    let p: ChunkwiseParams = declare_params(&mut kb, spec, log2_gammas.is_none());
    let smem = kb.dynamic_shared("smem", lay.total, 16, &lay.describe(TILES));

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y, V slice ctaid.z)");
    let (b, h, t) = cta_row_head_thread(&mut kb);
    // This path does not read the segmented op's parameters: it walks the whole sequence.
    let rows = chunk_rows_of(&mut kb, spec, &p, (None, log2_gammas.as_deref()), (b, h));
    let (heads, log2_gamma, scale) = (rows.heads, rows.log2_gamma, rows.scale);
    let (tok0, seq_len) = (rows.tok0, rows.seq_len);
    let base = kb.shared_addr(&smem);
    let t16 = kb.shl(t, 4u32);
    let fill = TableFill::Rounds {
        t,
        threads: THREADS,
        reuse_t: false,
    };
    emit_decay_table(&mut kb, fill, (base, lay.decay), c, log2_gamma);

    // The blocked path is never segmented: z is the V slice.
    let cta = (b, h, heads, t);
    let slice = load_state_slice(&mut kb, spec, &p.h0, cta, (base, t16), (vs, tail));
    let (v_col0, my_state) = (slice.v_col0, slice.my_state);
    let (state, state_bytes) = (&slice.state, slice.state_bytes);
    kb.bar_sync(0);

    let params = [&p.q, &p.k, &p.v, &p.o];
    let (cta, cols) = ((t, base, heads, h), (vs, blk, v_col0));
    let staging = FmaChunkStaging::for_spec(&mut kb, spec, cta, cols, (true, &params));
    let chunk = Blocked {
        spec,
        lay,
        staging,
        t,
        base,
        scale,
        v_col0,
        heads_h: (heads, h),
        dims: (kd, vs, blk),
    };

    kb.comment(format!(
        "walk the sequence in chunks of {c}, blocks of {blk}"
    ));
    for_each_chunk(&mut kb, (tok0, seq_len), c, |kb, tok_c, len| {
        let len_up = kb.add(len, blk - 1);
        let blocks = kb.shr(len_up, blk.trailing_zeros());
        kb.for_range(0u32, blocks, 1, |kb, bi| {
            chunk.query_block(kb, bi, (tok_c, len));
        });
        chunk.update_state(kb, blocks, (tok_c, len));
    });

    state.store_to_param(&mut kb, (&p.ht, state_bytes), my_state, tail, |_, _| {});
    kb.ret();
    kb.finish()
}

impl Blocked<'_> {
    /// Block `idx` of the chunk at `tok_c` with `len` rows: its first row, token and length.
    fn block_at(&self, kb: &mut KernelBuilder, idx: Reg, (tok_c, len): (Reg, Reg)) -> [Reg; 3] {
        let blk = self.dims.2;
        let row0 = kb.shl(idx, blk.trailing_zeros());
        let left = kb.sub(len, row0);
        let len_blk = kb.min(left, blk);
        let tok = kb.add(tok_c, row0);
        [row0, tok, len_blk]
    }

    /// Stage rows `tok`.. (block length `len_blk`) of k as Kᵀ and of v into their tiles.
    fn stage_kv(&self, kb: &mut KernelBuilder, tok: Reg, len_blk: Reg) {
        let st = &self.staging;
        st.stage_kt(kb, (st.ptrs[1], tok, len_blk), self.lay.kt, None);
        st.stage_v(kb, (st.ptrs[2], tok, len_blk), self.lay.v);
    }

    /// Query block I: O_I = ξ ⊙ ((sQ_I) R) + Σ_{J ≤ I} S_IJ V_J, rows `< L_I` to global.
    fn query_block(&self, kb: &mut KernelBuilder, bi: Reg, chunk: (Reg, Reg)) {
        let (kd, vs, blk) = self.dims;
        let lay = &self.lay;
        let [row_i, tok_i, len_i] = self.block_at(kb, bi, chunk);
        kb.comment("stage (s q_I)^T of rows < L_I as f32");
        let st = &self.staging;
        st.stage_kt(kb, (st.ptrs[0], tok_i, len_i), lay.qt, Some(self.scale));
        kb.bar_sync(0);

        kb.comment("O_I = xi . ((sQ_I) R), xi_i = gamma^(i+1) (i chunk-relative)");
        let row_i4 = kb.shl(row_i, 2u32);
        let mut o_acc: Vec<Acc4x4> = Vec::new();
        for_each_piece(kb, self.t, THREADS, blk, vs, |kb, p| {
            let acc = zero_acc(kb);
            let qr = ((lay.qt, blk * 4), (lay.r, vs * 4));
            let (a_base, _) = product_piece(kb, &acc, (self.base, &p), qr.0, qr.1, kd);
            let xi_at = kb.add(a_base, row_i4);
            let scaled: Acc4x4 = std::array::from_fn(|r| {
                let xi = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(xi_at, i64::from(lay.decay + 4 * (r as u32 + 1))),
                );
                std::array::from_fn(|cc| kb.mul(acc[r][cc], xi))
            });
            o_acc.push(scaled);
        });

        let i_plus = kb.add(bi, 1u32);
        kb.for_range(0u32, i_plus, 1, |kb, bj| {
            self.key_block(kb, bj, row_i, chunk, &o_acc);
        });

        kb.comment("O_I rows < L_I to global");
        let at = (self.heads_h, self.v_col0);
        let (o, ts) = (self.staging.ptrs[3], self.staging.tok_stride_v);
        let out = o_rows(self.spec, o, (tok_i, len_i), at, ts);
        let mut next = o_acc.iter();
        for_each_piece(kb, self.t, THREADS, blk, vs, |kb, p| {
            let acc = next.next().expect("one accumulator per piece round");
            store_piece_rows(kb, acc, &p, &out);
        });
    }

    /// Key block J ≤ I: stage K_J, V_J; S_IJ = (sQ_I) K_Jᵀ ⊙ D_IJ; O_I += S_IJ V_J.
    fn key_block(
        &self,
        kb: &mut KernelBuilder,
        bj: Reg,
        row_i: Reg,
        chunk: (Reg, Reg),
        o_acc: &[Acc4x4],
    ) {
        let (kd, vs, blk) = self.dims;
        let lay = &self.lay;
        let [row_j, tok_j, len_j] = self.block_at(kb, bj, chunk);
        kb.comment("stage k_J^T and v_J of rows < L_J as f32");
        self.stage_kv(kb, tok_j, len_j);
        kb.bar_sync(0);

        kb.comment("S_IJ^T[j][i] = (i >= j) ? gamma^(i-j) (sQ_i . k_j) : 0, i, j chunk-relative");
        // i - j = (row_i - row_j) + (i0 + r) - (j0 + cc); the scores add B so the causal
        // test and the clamped table index stay unsigned.
        let off_ij = kb.sub(row_i, row_j);
        let tiles = FmaScoreTiles {
            qt: lay.qt,
            kt: lay.kt,
            st: lay.st,
            decay: lay.decay,
        };
        for_each_piece(kb, self.t, THREADS, blk, blk, |kb, p| {
            causal_scores_piece_fma(kb, (self.base, &p), &tiles, (blk, kd), Some(off_ij));
        });
        kb.bar_sync(0);

        kb.comment("O_I += S_IJ V_J over j < L_J");
        let mut next = o_acc.iter();
        for_each_piece(kb, self.t, THREADS, blk, vs, |kb, p| {
            let acc = next.next().expect("one accumulator per piece round");
            let sv = ((lay.st, blk * 4), (lay.v, vs * 4));
            product_piece(kb, acc, (self.base, &p), sv.0, sv.1, len_j);
        });
        kb.bar_sync(0);
    }

    /// R ← γ^L R + Σ_J K_Jᵀ (V_J ⊙ ζ_J), last block first (still staged).
    fn update_state(&self, kb: &mut KernelBuilder, blocks: Reg, chunk: (Reg, Reg)) {
        let (kd, vs, blk) = self.dims;
        let lay = &self.lay;
        let len = chunk.1;
        kb.comment("R <- gamma^L R + sum_J K_J^T (V_J . zeta), last block first (still staged)");
        let (_, g_len) = table_entry(kb, (self.base, lay.decay), len);
        kb.for_range(0u32, blocks, 1, |kb, step| {
            let last = kb.sub(blocks, 1u32);
            let bj = kb.sub(last, step);
            let [row_j, tok_j, len_j] = self.block_at(kb, bj, chunk);
            let first = kb.setp(Cmp::Eq, step, 0u32);
            let staged = kb.label();
            kb.bra_if(first, false, staged);
            self.stage_kv(kb, tok_j, len_j);
            kb.place(staged);
            kb.bar_sync(0);
            let factor = kb.selp(g_len, 1.0f32, first);
            // zeta_j = gamma^(L-1-row_j-jj), jj = 0.. walks the table down.
            let zeta0 = kb.sub(len, row_j);
            let zeta0_4 = kb.shl(zeta0, 2u32);
            let zeta_at = kb.add(self.base, zeta0_4);
            let tiles = FmaStateTiles {
                base: self.base,
                r: None,
                staged: StagedChunk {
                    kt: lay.kt,
                    kt_rows: blk,
                    v: lay.v,
                    vs,
                },
            };
            let zeta = (zeta_at, lay.decay - 4);
            update_state_fma(
                kb,
                (self.t, THREADS),
                &tiles,
                (kd, vs),
                (factor, zeta),
                len_j,
            );
            kb.bar_sync(0);
        });
    }
}
