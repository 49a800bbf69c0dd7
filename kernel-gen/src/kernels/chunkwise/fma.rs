//! The FMA path of the chunkwise forward (f32 inputs): one CTA per (row b, head h, slice z
//! of V) with 256 threads, the f32 state R in shared memory, chunks that shared memory holds
//! whole (longer ones: [`super::fma_blocked`]). Math, parameters and grid as the family's
//! module docs say; the kernel is its phases: stage (sQ)ᵀ, Kᵀ, V; scores Sᵀ = (QKᵀ ⊙ D)ᵀ;
//! output O = ξ ⊙ (sQ) R + S V; state R ← γ^L R + Kᵀ (V ⊙ ζ); store H_T.

use crate::GenError;
use crate::blocks::cta::cta_row_head_thread;
use crate::blocks::decay::window_and_decay_table;
use crate::blocks::fma::{
    accumulate_shared, for_each_piece, product_piece, store_piece_rows, zero_acc,
};
use crate::dsl::{Address, KernelBuilder, Reg, Space, Ty};
use crate::math::chunk_params::{ChunkwiseParams, chunk_rows, declare_params, for_each_chunk};
use crate::math::chunk_tiling::{SharedLayout, THREADS, exact_dims, tile_spec, value_slice};
use crate::math::fma_chunk::o_rows;
use crate::math::fma_chunk::{FmaChunkStaging, load_state_slice};
use crate::math::kernel_head::start_kernel;
use crate::math::scores::{FmaScoreTiles, causal_scores_piece_fma};
use crate::math::segment_fold::FoldInto;
use crate::math::state_update::update_state_fma_chunk;
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention chunkwise forward";
/// The shared tiles, as the shared window's comment names them.
const TILES: [&str; 5] = [
    "R [K,V]",
    "(sQ)^T [K,C]",
    "K^T [K,C]",
    "V [C,V]",
    "S^T [C,C]",
];
/// What the kernel computes, as its header says.
const FORMULA: &str =
    "O = ((sQ) R) . xi + ((sQ) K^T . D) V ; R <- g^L R + K^T (V . zeta)  (f32 state on chip)";

/// What the per-chunk phases read, fixed before the sequence loop.
struct Chunk<'a> {
    spec: &'a KernelSpec,
    lay: SharedLayout,
    staging: FmaChunkStaging,
    /// t, the shared base, H, h, s and this CTA's first V column.
    t: Reg,
    base: Reg,
    heads: Reg,
    h: Reg,
    scale: Reg,
    v_col0: Reg,
    /// (K padded, V slice, C).
    dims: (u32, u32, u32),
}

/// Emit the whole-chunk FMA chunkwise forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (K: kd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let kd = tile.k;
    let (kg, vg) = (spec.k, spec.v);
    let tail = (!exact_dims(spec)).then_some((kg, vg));
    let vs = value_slice(spec); // columns of V this CTA serves
    let c = spec.chunk.unwrap_or_default();
    let lay = SharedLayout::new(kd, vs, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    // Shared memory (over 80 KiB) already limits the path to one or two CTAs per SM; let
    // ptxas budget registers for one rather than spill.
    let mut kb = start_kernel(spec, TITLE, FORMULA, (THREADS, true));

    let p: ChunkwiseParams = declare_params(&mut kb, spec, log2_gammas.is_none());
    let smem = kb.dynamic_shared("smem", lay.total, 16, &lay.describe(TILES));

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y)");
    let (b, h, t) = cta_row_head_thread(&mut kb);
    let rows = chunk_rows(&mut kb, spec, &p, log2_gammas.as_deref(), (b, h));
    let (heads, log2_gamma, scale, segment) =
        (rows.heads, rows.log2_gamma, rows.scale, rows.segment);
    let (base, t16) = window_and_decay_table(&mut kb, (&smem, t), (lay.decay, c), log2_gamma);

    let cta = (b, h, heads, t);
    let slice = load_state_slice(&mut kb, spec, &p.h0, cta, (base, t16), (vs, tail));
    let (v_col0, bh, my_state) = (slice.v_col0, slice.bh, slice.my_state);
    let (state, state_bytes) = (&slice.state, slice.state_bytes);
    if let Some(seg) = &segment {
        // The workspace holds padded states: the thread's offset in a [kd][vd] tile.
        let ws_elem_bytes = if tail.is_some() {
            let e = kb.mad_lo(state.row, tile.v, state.col);
            kb.mul_wide(e, 4u32)
        } else {
            state.elem_bytes
        };
        let into = FoldInto::Shared(my_state);
        seg.fold(&mut kb, spec, log2_gamma, (bh, ws_elem_bytes), into);
    }
    kb.bar_sync(0);

    let params = [&p.q, &p.k, &p.v, &p.o];
    let (cta, cols) = ((t, base, heads, h), (vs, c, v_col0));
    let staging = FmaChunkStaging::for_spec(&mut kb, spec, cta, cols, (true, &params));
    let chunk = Chunk {
        spec,
        lay,
        staging,
        t,
        base,
        heads,
        h,
        scale,
        v_col0,
        dims: (kd, vs, c),
    };

    kb.comment(format!("walk the sequence in chunks of {c}"));
    for_each_chunk(&mut kb, (rows.tok0, rows.seq_len), c, |kb, tok_c, len| {
        chunk.stage(kb, tok_c, len);
        chunk.scores(kb);
        chunk.output(kb, tok_c, len);
        chunk.update_state(kb, len);
    });

    let skip = |kb: &mut KernelBuilder, done| {
        if let Some(seg) = &segment {
            seg.skip_unless_last(kb, done);
        }
    };
    state.store_to_param(&mut kb, (&p.ht, state_bytes), my_state, tail, skip);
    kb.ret();
    kb.finish()
}

impl Chunk<'_> {
    /// Stage (s q)ᵀ, kᵀ and v of the chunk's rows `< len` as f32.
    fn stage(&self, kb: &mut KernelBuilder, tok_c: Reg, len: Reg) {
        kb.comment("stage (s q)^T, k^T and v of rows < L as f32");
        let st = &self.staging;
        let (q, k, v) = (st.ptrs[0], st.ptrs[1], st.ptrs[2]);
        let qk_off = st.k_row_offset(kb, tok_c);
        let q_first = kb.add(q, qk_off);
        let k_first = kb.add(k, qk_off);
        st.stage_kt_at(kb, q_first, len, self.lay.qt, Some(self.scale));
        st.stage_kt_at(kb, k_first, len, self.lay.kt, None);
        st.stage_v(kb, (v, tok_c, len), self.lay.v);
        kb.bar_sync(0);
    }

    /// Sᵀ = ((sQ) Kᵀ ⊙ D)ᵀ into shared memory.
    fn scores(&self, kb: &mut KernelBuilder) {
        kb.comment("S^T[j][i] = (i >= j) ? gamma^(i-j) (sQ_i . k_j) : 0");
        let (kd, _, c) = self.dims;
        let tiles = FmaScoreTiles {
            qt: self.lay.qt,
            kt: self.lay.kt,
            st: self.lay.st,
            decay: self.lay.decay,
        };
        for_each_piece(kb, self.t, THREADS, c, c, |kb, p| {
            causal_scores_piece_fma(kb, (self.base, &p), &tiles, (c, kd), None);
        });
        kb.bar_sync(0);
    }

    /// O = ξ ⊙ ((sQ) R) + S V, rows `< len` to global memory.
    fn output(&self, kb: &mut KernelBuilder, tok_c: Reg, len: Reg) {
        kb.comment("O[i] = xi_i (sQ_i . R) + sum_{j<L} S[i][j] v_j ; rows i < L to global");
        let (kd, vs, c) = self.dims;
        let lay = &self.lay;
        let at = ((self.heads, self.h), self.v_col0);
        let (o, ts) = (self.staging.ptrs[3], self.staging.tok_stride_v);
        let out = o_rows(self.spec, o, (tok_c, len), at, ts);
        for_each_piece(kb, self.t, THREADS, c, vs, |kb, p| {
            let acc = zero_acc(kb);
            let qr = ((lay.qt, c * 4), (lay.r, vs * 4));
            let (a_base, b_base) = product_piece(kb, &acc, (self.base, &p), qr.0, qr.1, kd);
            let acc: [[Reg; 4]; 4] = std::array::from_fn(|r| {
                let xi = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(a_base, i64::from(lay.decay + 4 * (r as u32 + 1))),
                );
                std::array::from_fn(|cc| kb.mul(acc[r][cc], xi))
            });
            let a = kb.add(a_base, lay.st);
            let bb = kb.add(b_base, lay.v);
            accumulate_shared(kb, &acc, a, c * 4, bb, vs * 4, len);
            store_piece_rows(kb, &acc, &p, &out);
        });
        kb.bar_sync(0);
    }

    /// R ← γ^L R + Kᵀ (V ⊙ ζ), ζ_j = γ^(L−1−j).
    fn update_state(&self, kb: &mut KernelBuilder, len: Reg) {
        kb.comment("R <- gamma^L R + sum_{j<L} gamma^(L-1-j) k_j^T v_j");
        let (kd, vs, c) = self.dims;
        let lay = &self.lay;
        let tiles = (None, lay.kt, lay.v, lay.decay);
        update_state_fma_chunk(kb, (self.t, THREADS), tiles, (kd, vs, c), (self.base, len));
        kb.bar_sync(0);
    }
}
