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
use crate::blocks::decay::{self, heads_and_log2_gamma};
use crate::blocks::global::{GlobalRows, load_f32_masked, state_row_limit, store_from_f32_masked};
use crate::blocks::staging::{ColumnTail, copy_chunk_out, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments, scale_pair_split};
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Reg, Rounding, Space, Sreg, Ty};
use crate::math::chunk_params::{ChunkwiseParams, declare_params, sequence_bounds};
use crate::math::chunk_tiling::{
    TcLayout, WHOLE_SCORE_TILE, exact_dims, streamed_plan, tc_layout, tc_value_slice, tc_warps,
    tile_spec,
};
use crate::math::scores::Diagonal;
use crate::math::segment_fold as two_phase;
use crate::spec::KernelSpec;

/// What the rows phase of a long chunk needs: tiles, per-lane addresses, and the shape.
struct RowsCtx {
    lay: TcLayout,
    base: Reg,
    pty: Ty,
    ab: Ty,
    lanes: LaneFragments,
    /// Per row block rb of the warp: its first chunk row 16(w + rb·W) and q's lane rows.
    row0: Vec<Reg>,
    q_rows: Vec<Reg>,
    k_rows: Reg,
    v_rows: Reg,
    rh_rows: Reg,
    warp: Reg,
    g: Reg,
    q4: Reg,
    q2: Reg,
    scale: Reg,
    kd: u32,
    vs: u32,
    ow: u32,
    c: u32,
    w_count: u32,
}

/// The rows phase of a chunk longer than [`WHOLE_SCORE_TILE`]: every warp owns C/(16W) row
/// blocks of 16 rows, and for each builds `O = s (ξ ⊙ Q R̃ + Σ_J S̃_J V_J)` with the score
/// strip `S_J = Q K_Jᵀ ⊙ D` made, masked and packed 64 columns (J) at a time; column blocks
/// wholly above the diagonal are skipped (a warp-uniform branch).
fn long_chunk_rows(kb: &mut KernelBuilder, x: &RowsCtx) {
    let lay = &x.lay;
    for (rb, (&i0, &q_rows)) in x.row0.iter().zip(&x.q_rows).enumerate() {
        kb.comment(format!(
            "row block {rb}: rows 16(w + {rb}W).., S built 64 columns at a time"
        ));
        let d1 = kb.add(i0, x.g);
        let diag = Diagonal::new(kb, d1, x.q2);
        let row4 = kb.shl(d1, 2u32);
        let xi_at = kb.add(x.base, row4);
        let xi_lo = kb.ld(
            Space::Shared,
            Ty::F32,
            Address::reg(xi_at, i64::from(lay.decay + 4)),
        );
        let xi_hi = kb.ld(
            Space::Shared,
            Ty::F32,
            Address::reg(xi_at, i64::from(lay.decay + 36)),
        );
        // Index of this warp's row block among the chunk's 16-row blocks.
        let block = kb.add(x.warp, x.w_count * rb as u32);
        for slice in 0..x.vs / x.ow {
            let oacc = AccTileF32::zeros(kb, x.ow);
            let pairs = |np: u32| (np as usize * 2, x.ow / 8 * slice + 2 * np);
            for ks in 0..x.kd / 16 {
                let qa = lay
                    .q
                    .ldmatrix_x4(kb, x.pty, false, q_rows, 0, 2 * ks, x.lanes.p1_x);
                for np in 0..x.ow / 16 {
                    let (nt, chunk) = pairs(np);
                    let rf = lay.rh.ldmatrix_x4(
                        kb,
                        x.pty,
                        true,
                        x.rh_rows,
                        16 * ks,
                        chunk,
                        x.lanes.p1_x,
                    );
                    oacc.mma(kb, x.ab, nt, qa, [rf[0], rf[1]]);
                    oacc.mma(kb, x.ab, nt + 1, qa, [rf[2], rf[3]]);
                }
            }
            oacc.scale_rows(kb, xi_lo, xi_hi);
            for cb in 0..x.c / 64 {
                // Columns 64cb.. lie wholly above the diagonal of rows 16·block.. when
                // 16·block + 15 < 64cb.
                let skip = (cb > 0).then(|| {
                    let label = kb.label();
                    let above = kb.setp(Cmp::Lt, block, 4 * cb);
                    kb.bra_if(above, false, label);
                    label
                });
                let sacc = AccTileF32::zeros(kb, 64);
                for ks in 0..x.kd / 16 {
                    let qa = lay
                        .q
                        .ldmatrix_x4(kb, x.pty, false, q_rows, 0, 2 * ks, x.lanes.p1_x);
                    for np in 0..4 {
                        let kf = lay.k.ldmatrix_x4(
                            kb,
                            x.pty,
                            false,
                            x.k_rows,
                            64 * cb + 16 * np,
                            2 * ks,
                            x.lanes.p2_x,
                        );
                        sacc.mma(kb, x.ab, 2 * np as usize, qa, [kf[0], kf[1]]);
                        sacc.mma(kb, x.ab, 2 * np as usize + 1, qa, [kf[2], kf[3]]);
                    }
                }
                let masked = diag.mask(kb, &sacc, x.base, lay.decay, 64 * cb);
                let sa = masked.to_a_fragments(kb, x.ab);
                for (ks, a) in sa.iter().enumerate() {
                    for np in 0..x.ow / 16 {
                        let (nt, chunk) = pairs(np);
                        let vf = lay.v.ldmatrix_x4(
                            kb,
                            x.pty,
                            true,
                            x.v_rows,
                            64 * cb + 16 * ks as u32,
                            chunk,
                            x.lanes.p1_x,
                        );
                        oacc.mma(kb, x.ab, nt, *a, [vf[0], vf[1]]);
                        oacc.mma(kb, x.ab, nt + 1, *a, [vf[2], vf[3]]);
                    }
                }
                if let Some(label) = skip {
                    kb.place(label);
                }
            }
            oacc.scale(kb, x.scale);
            lay.o
                .store_acc(kb, x.base, &oacc, x.ab, i0, x.g, x.q4, x.ow / 8 * slice);
        }
    }
}

/// Branch to a fresh label when `warp >= limit` (a warp-uniform role test); returns the
/// label to place after the role's code, or `None` when every warp has the role.
fn role(kb: &mut KernelBuilder, warp: Reg, limit: u32, warps: u32) -> Option<crate::dsl::Label> {
    (limit < warps).then(|| {
        let skip = kb.label();
        let idle = kb.setp(Cmp::Ge, warp, limit);
        kb.bra_if(idle, false, skip);
        skip
    })
}

/// Emit the tensor-core chunkwise forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (kd, vd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let vs = tc_value_slice(spec); // columns of V this CTA serves
    let c = spec.chunk.unwrap_or_default();
    // Columns of O built at a time: 32 where K = 256 with C ≥ 64 leaves no registers for 64.
    let ow = if kd == 256 && c >= 64 { 32 } else { 64 };
    let es = spec.dtype.size_bytes() as u32;
    let ab = match spec.dtype {
        Dtype::Bf16 => Ty::Bf16,
        _ => Ty::F16,
    };
    let pty = ab.packed().unwrap_or(Ty::F16x2);
    let w_count = tc_warps(spec);
    let threads = 32 * w_count;
    let lay = tc_layout(spec);
    let streamed = streamed_plan(spec);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!(
        "retention chunkwise forward (tensor cores): {}",
        spec.slug()
    ));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header("per warp: S = Q K^T . D ; O = s (xi . Q R~ + S~ V) ; R <- g^L R + (K^T . zeta) V  (mma, f32 state in registers)");
    kb.max_threads(threads);
    // Three f32 accumulator tiles live at once (S, O and the state): ptxas's default budget
    // for 128 threads (168 registers) spills a few bytes; one CTA per SM removes the cap.
    kb.min_ctas_per_sm(1);

    let ChunkwiseParams {
        q: p_q,
        k: p_k,
        v: p_v,
        o: p_o,
        h0: p_h0,
        ht: p_ht,
        lengths: p_t,
        scale: p_scale,
        segments,
        runtime,
    } = declare_params(&mut kb, spec, log2_gammas.is_none());
    let tiles = match streamed {
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
    };
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        128,
        &format!("{tiles}; f32 gamma^d [C+1] @{}", lay.decay),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let lane = kb.and(t, 31u32);
    let warp = kb.shr(t, 5u32);
    let g = kb.shr(lane, 2u32);
    let q4 = kb.and(lane, 3u32);
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, runtime.as_ref(), log2_gammas.as_deref(), h);
    let (tok0, seq_len) = sequence_bounds(&mut kb, spec, &p_t, b);
    let (tok0, seq_len, segment) =
        two_phase::segment_of(&mut kb, spec, segments.as_ref(), &p_t, tok0, seq_len);
    let scale = kb.ld_param(&p_scale);
    let base = kb.shared_addr(&smem);

    kb.comment(format!(
        "decay table gamma^d = 2^(d log2 gamma), d = 0..={c}, relative exponents only"
    ));
    for round in 0..(c + 1).div_ceil(threads) {
        let d_int = if round == 0 {
            t
        } else {
            kb.add(t, round * threads)
        };
        let in_table = kb.setp(Cmp::Le, d_int, c);
        kb.guarded(in_table, false, |kb| {
            let d = kb.cvt(Ty::F32, d_int, Some(Rounding::Rn));
            let x = kb.mul(d, log2_gamma);
            let gd = decay::emit_exp2(kb, x);
            let t4 = kb.shl(d_int, 2u32);
            let at = kb.add(base, t4);
            kb.st(Space::Shared, Address::reg(at, i64::from(lay.decay)), gd);
        });
    }

    kb.comment("per-lane ldmatrix rows; warp w owns rows 16w.. of the chunk and of the state");
    let lanes = LaneFragments::new(&mut kb, lane);
    let zero = kb.mov(Ty::U32, 0u32);
    let i0 = kb.shl(warp, 4u32);
    let k_chunk = kb.shl(warp, 1u32); // 16w / 8: chunk of column 16w in a [C][K] tile
    let q_rows = lay.q.lane_rows(&mut kb, base, i0, lanes.p1_row);
    let k_rows = lay.k.lane_rows(&mut kb, base, zero, lanes.p2_row);
    let rh_rows = lay.rh.lane_rows(&mut kb, base, zero, lanes.p1_row);
    let v_rows = lay.v.lane_rows(&mut kb, base, zero, lanes.p1_row);

    kb.comment("R_w = H0[b,h] rows 16w.. (or 0), in mma accumulators; R~ = R rounded");
    let bh = kb.mad_lo(b, heads, h);
    let state_bytes = kb.mul_wide(bh, kg * vg * 4);
    // 16-row state slices per warp; slice j of warp w holds rows 16(w + j·W)..
    let slices = (kd / 16 / w_count).max(1);
    let raccs: Vec<AccTileF32> = (0..slices)
        .map(|_| AccTileF32::zeros(&mut kb, vs))
        .collect();
    let slice_rows: Vec<Reg> = (0..slices)
        .map(|j| {
            if j == 0 {
                i0
            } else {
                kb.add(i0, 16 * w_count * j)
            }
        })
        .collect();
    let slice_bytes = |j: usize| i64::from(16 * w_count * j as u32 * vg * 4);
    // Element (16w + g, 2q) of the state: the lane's first f32 pair.
    let my_row = kb.add(i0, g);
    let q2 = kb.shl(q4, 1u32);
    // With V split over the grid's z axis, this CTA's columns start at vs·z.
    let v_col0 = (vs < vd).then(|| {
        let z = two_phase::value_slice_index(&mut kb, spec);
        kb.mul_lo(z, vs)
    });
    let my_col = match v_col0 {
        Some(c0) => kb.add(q2, c0),
        None => q2,
    };
    let my_elem = kb.mad_lo(my_row, vg, my_col);
    let my_elem_bytes = kb.mul_wide(my_elem, 4u32);
    let state_role = role(&mut kb, warp, kd / 16, w_count);
    let h0_raw = kb.ld_param(&p_h0);
    let has_h0 = kb.setp(Cmp::Ne, h0_raw, 0u64);
    let no_h0 = kb.label();
    kb.bra_if(has_h0, true, no_h0);
    let h0 = kb.global_ptr(&p_h0);
    let h0_bh = kb.add(h0, state_bytes);
    let h0_at = kb.add(h0_bh, my_elem_bytes);
    for (j, racc) in raccs.iter().enumerate() {
        for (nt, f) in racc.frags.iter().enumerate() {
            for half in 0..2 {
                let off = i64::from(nt as u32 * 32 + half * 8 * vg * 4) + slice_bytes(j);
                let at = Address::reg(h0_at, off);
                let x = if tail {
                    let ahead = half * 8 + 16 * w_count * j as u32;
                    let limit = state_row_limit(&mut kb, my_row, ahead, (kg, vg));
                    let col = kb.add(my_col, 8 * nt as u32);
                    load_f32_masked(&mut kb, (Dtype::F32, 2), at, col, limit, vg)
                } else {
                    kb.ld_vec(Space::Global, Ty::F32, 2, at)
                };
                kb.assign(f[2 * half as usize], x[0]);
                kb.assign(f[2 * half as usize + 1], x[1]);
            }
        }
    }
    kb.place(no_h0);
    if let Some(seg) = &segment {
        // The workspace holds padded states: offsets in a [kd][vd] tile.
        let (ws_elem_bytes, ws_slice_bytes) = if tail {
            let e = kb.mad_lo(my_row, vd, my_col);
            let at = kb.mul_wide(e, 4u32);
            (at, 16 * w_count * vd * 4)
        } else {
            (my_elem_bytes, 16 * w_count * vg * 4)
        };
        for (j, racc) in raccs.iter().enumerate() {
            let at = if j == 0 {
                ws_elem_bytes
            } else {
                kb.add(ws_elem_bytes, u64::from(ws_slice_bytes * j as u32))
            };
            seg.fold_into_acc(&mut kb, spec, log2_gamma, bh, at, racc);
        }
    }
    for (racc, &r0) in raccs.iter().zip(&slice_rows) {
        lay.rh.store_acc(&mut kb, base, racc, ab, r0, g, q4, 0);
    }
    if let Some(skip) = state_role {
        kb.place(skip);
    }
    kb.bar_sync(0);

    let q = kb.global_ptr(&p_q);
    let k = kb.global_ptr(&p_k);
    let v = kb.global_ptr(&p_v);
    let o = kb.global_ptr(&p_o);
    // q, k, o and v as the tiles see them: v and o from this CTA's first column on.
    let (v, o) = match v_col0 {
        Some(c0) => {
            let col_bytes = kb.mul_wide(c0, es);
            (kb.add(v, col_bytes), kb.add(o, col_bytes))
        }
        None => (v, o),
    };
    let o_per_row = vs / 8;
    let o_ch = kb.and(t, o_per_row - 1);
    let o_row0 = kb.shr(t, o_per_row.trailing_zeros());
    let o_ch_bytes = kb.mul_wide(o_ch, 16u32);
    let o_ch_at = kb.add(o, o_ch_bytes);
    // Padded tiles: the real columns of the q, k (K) and v, o (V) tiles, and o's chunk column.
    let tails = tail.then(|| {
        let kt = ColumnTail::new(&mut kb, None, kg);
        let vt = ColumnTail::new(&mut kb, v_col0, vg);
        (kt, vt)
    });
    let o_ch8 = tail.then(|| kb.shl(o_ch, 3u32));

    // Long chunks: the first row of each of the warp's row blocks (none for short chunks).
    let long_row0: Vec<Reg> = if c > WHOLE_SCORE_TILE && streamed.is_none() {
        (0..c / 16 / w_count)
            .map(|rb| {
                if rb == 0 {
                    i0
                } else {
                    kb.add(i0, 16 * w_count * rb)
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let rows_ctx = RowsCtx {
        lay,
        base,
        pty,
        ab,
        lanes,
        row0: long_row0.clone(),
        q_rows: long_row0
            .iter()
            .map(|&r0| lay.q.lane_rows(&mut kb, base, r0, lanes.p1_row))
            .collect(),
        k_rows,
        v_rows,
        rh_rows,
        warp,
        g,
        q4,
        q2,
        scale,
        kd,
        vs,
        ow,
        c,
        w_count,
    };

    let streamed = streamed.map(|plan| StreamedChunk {
        plan,
        lay,
        base,
        t,
        threads,
        warp,
        g,
        q4,
        q2,
        lanes,
        pty,
        ab,
        scale,
        heads,
        h,
        q,
        k,
        v,
        o,
        kd,
        dims: (kg, vg),
        tails,
        vs,
        c,
        es,
        k_rows,
        v_rows,
        rh_rows,
        k_chunk,
        w_count,
        raccs: &raccs,
    });
    let streamed_role = streamed.as_ref().map(|s| s.rows_role(&mut kb));

    kb.comment(format!("walk the sequence in chunks of {c}"));
    kb.for_range(0u32, seq_len, c, |kb, c0| {
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);
        if let (Some(chunk), Some(role)) = (&streamed, &streamed_role) {
            chunk.emit(kb, role, len, tok_c);
            kb.comment("R~ <- R rounded, for the next chunk's passes");
            for (racc, &r0) in raccs.iter().zip(&slice_rows) {
                lay.rh.store_acc(kb, base, racc, ab, r0, g, q4, 0);
            }
            return;
        }

        kb.comment("cp.async q, k, v rows of the chunk (rows >= L zero-filled)");
        let (kt, vt) = (tails.map(|t| t.0), tails.map(|t| t.1));
        for (tile, src, row_elems, cols) in
            [(lay.q, q, kg, kt), (lay.k, k, kg, kt), (lay.v, v, vg, vt)]
        {
            let rows = GlobalRows {
                src,
                row_bytes: row_elems * es,
                tok_c,
                heads,
                h,
                len,
            };
            stage_tile_masked(kb, tile, base, t, threads, &rows, cols);
        }
        kb.cp_async_commit();
        kb.cp_async_wait(0);
        kb.bar_sync(0);

        if c > WHOLE_SCORE_TILE {
            long_chunk_rows(kb, &rows_ctx);
        } else {
            kb.comment("rows 16w..: S = Q K^T on tensor cores");
            let rows_role = role(kb, warp, c / 16, w_count);
            let sacc = AccTileF32::zeros(kb, c);
            for ks in 0..kd / 16 {
                let qa = lay
                    .q
                    .ldmatrix_x4(kb, pty, false, q_rows, 0, 2 * ks, lanes.p1_x);
                for np in 0..c / 16 {
                    let kf = lay
                        .k
                        .ldmatrix_x4(kb, pty, false, k_rows, 16 * np, 2 * ks, lanes.p2_x);
                    sacc.mma(kb, ab, 2 * np as usize, qa, [kf[0], kf[1]]);
                    sacc.mma(kb, ab, 2 * np as usize + 1, qa, [kf[2], kf[3]]);
                }
            }
            kb.comment(
                "S[i][j] = (i >= j) ? gamma^(i-j) S[i][j] : 0 (selp: stale rows cannot leak)",
            );
            let d1 = kb.add(i0, g);
            let diag = Diagonal::new(kb, d1, q2);
            let masked = diag.mask(kb, &sacc, base, lay.decay, 0);
            let sa = masked.to_a_fragments(kb, ab);
            kb.comment(format!(
                "O = s (xi . Q R~ + S~ V), xi_i = gamma^(i+1), {ow} columns at a time"
            ));
            let row4 = kb.shl(d1, 2u32);
            let xi_at = kb.add(base, row4);
            let xi_lo = kb.ld(
                Space::Shared,
                Ty::F32,
                Address::reg(xi_at, i64::from(lay.decay + 4)),
            );
            let xi_hi = kb.ld(
                Space::Shared,
                Ty::F32,
                Address::reg(xi_at, i64::from(lay.decay + 36)),
            );
            // S is packed before any O accumulator is live, and O is built `ow` columns at a time,
            // so at most S~ (C/4), one O slice (ow/2) and the state (V/2 per slice) are live.
            for slice in 0..vs / ow {
                let oacc = AccTileF32::zeros(kb, ow);
                let pairs = |np: u32| (np as usize * 2, ow / 8 * slice + 2 * np);
                for ks in 0..kd / 16 {
                    let qa = lay
                        .q
                        .ldmatrix_x4(kb, pty, false, q_rows, 0, 2 * ks, lanes.p1_x);
                    for np in 0..ow / 16 {
                        let (nt, chunk) = pairs(np);
                        let rf =
                            lay.rh
                                .ldmatrix_x4(kb, pty, true, rh_rows, 16 * ks, chunk, lanes.p1_x);
                        oacc.mma(kb, ab, nt, qa, [rf[0], rf[1]]);
                        oacc.mma(kb, ab, nt + 1, qa, [rf[2], rf[3]]);
                    }
                }
                oacc.scale_rows(kb, xi_lo, xi_hi);
                for (ks, a) in sa.iter().enumerate() {
                    for np in 0..ow / 16 {
                        let (nt, chunk) = pairs(np);
                        let vf = lay.v.ldmatrix_x4(
                            kb,
                            pty,
                            true,
                            v_rows,
                            16 * ks as u32,
                            chunk,
                            lanes.p1_x,
                        );
                        oacc.mma(kb, ab, nt, *a, [vf[0], vf[1]]);
                        oacc.mma(kb, ab, nt + 1, *a, [vf[2], vf[3]]);
                    }
                }
                oacc.scale(kb, scale);
                lay.o
                    .store_acc(kb, base, &oacc, ab, i0, g, q4, ow / 8 * slice);
            }
            if let Some(skip) = rows_role {
                kb.place(skip);
            }
        }

        kb.comment("state rows 16w..: R <- gamma^L R + (K^T . zeta) V, zeta_j = gamma^(L-1-j)");
        let len4 = kb.shl(len, 2u32);
        let gl_at = kb.add(base, len4);
        let g_len = kb.ld(
            Space::Shared,
            Ty::F32,
            Address::reg(gl_at, i64::from(lay.decay)),
        );
        let state_role = role(kb, warp, kd / 16, w_count);
        for racc in &raccs {
            racc.scale(kb, g_len);
        }
        // zeta index + C = L + C - 1 - j, j = 16 ks + 2q + e: clamped to C (γ^0) past L,
        // where the zero-filled k and v rows make the term vanish anyway.
        let z1 = kb.add(len, c - 1);
        let z_base = kb.sub(z1, q2);
        for ks in 0..c / 16 {
            let ka0 = lay
                .k
                .ldmatrix_x4(kb, pty, true, k_rows, 16 * ks, k_chunk, lanes.p2_x);
            let zeta: Vec<Reg> = [0u32, 1, 8, 9]
                .iter()
                .map(|&e| {
                    let idx = kb.sub(z_base, 16 * ks + e);
                    let cl = kb.max(idx, c);
                    let cl4 = kb.shl(cl, 2u32);
                    let at = kb.add(base, cl4);
                    kb.ld(
                        Space::Shared,
                        Ty::F32,
                        Address::reg(at, i64::from(lay.decay) - i64::from(4 * c)),
                    )
                })
                .collect();
            for (j, racc) in raccs.iter().enumerate() {
                // Slice j's rows of K^T: columns 16(w + jW).. of the k tile.
                let ka = if j == 0 {
                    ka0
                } else {
                    let kc = kb.add(k_chunk, 2 * w_count * j as u32);
                    lay.k
                        .ldmatrix_x4(kb, pty, true, k_rows, 16 * ks, kc, lanes.p2_x)
                };
                // K^T . zeta as head + tail 16-bit fragments: the f32 decay is not rounded away.
                let split = [
                    scale_pair_split(kb, ka[0], zeta[0], zeta[1]),
                    scale_pair_split(kb, ka[1], zeta[0], zeta[1]),
                    scale_pair_split(kb, ka[2], zeta[2], zeta[3]),
                    scale_pair_split(kb, ka[3], zeta[2], zeta[3]),
                ];
                let head = split.map(|p| p.0);
                let tail = split.map(|p| p.1);
                for np in 0..vs / 16 {
                    let vf = lay
                        .v
                        .ldmatrix_x4(kb, pty, true, v_rows, 16 * ks, 2 * np, lanes.p1_x);
                    for kz in [head, tail] {
                        racc.mma(kb, ab, 2 * np as usize, kz, [vf[0], vf[1]]);
                        racc.mma(kb, ab, 2 * np as usize + 1, kz, [vf[2], vf[3]]);
                    }
                }
            }
        }
        if let Some(skip) = state_role {
            kb.place(skip);
        }
        kb.bar_sync(0);

        kb.comment("R~ <- R rounded; o rows < L leave as whole 16-byte pieces");
        let state_role = role(kb, warp, kd / 16, w_count);
        for (racc, &r0) in raccs.iter().zip(&slice_rows) {
            lay.rh.store_acc(kb, base, racc, ab, r0, g, q4, 0);
        }
        if let Some(skip) = state_role {
            kb.place(skip);
        }
        for round in 0..c * o_per_row / threads {
            let row = kb.add(o_row0, round * threads / o_per_row);
            let inside = kb.setp(Cmp::Lt, row, len);
            let tok = kb.add(tok_c, row);
            let th = kb.mad_lo(tok, heads, h);
            let dst = kb.mad_wide(th, vg * es, o_ch_at);
            let src = lay.o.chunk_addr(kb, base, row, o_ch);
            let cols = o_ch8.zip(tails.map(|t| t.1));
            copy_chunk_out(kb, src, dst, inside, cols);
        }
        kb.bar_sync(0);
    });

    kb.comment("H_T[b,h] rows 16w.. = R_w when asked for");
    let done = kb.label();
    if kd / 16 < w_count {
        let idle = kb.setp(Cmp::Ge, warp, kd / 16);
        kb.bra_if(idle, false, done);
    }
    let ht_raw = kb.ld_param(&p_ht);
    let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
    kb.bra_if(has_ht, true, done);
    if let Some(seg) = &segment {
        seg.skip_unless_last(&mut kb, done);
    }
    let ht = kb.global_ptr(&p_ht);
    let ht_bh = kb.add(ht, state_bytes);
    let ht_at = kb.add(ht_bh, my_elem_bytes);
    for (j, racc) in raccs.iter().enumerate() {
        for (nt, f) in racc.frags.iter().enumerate() {
            for half in 0..2u32 {
                let off = i64::from(nt as u32 * 32 + half * 8 * vg * 4) + slice_bytes(j);
                let i = 2 * half as usize;
                let at = Address::reg(ht_at, off);
                if tail {
                    let ahead = half * 8 + 16 * w_count * j as u32;
                    let limit = state_row_limit(&mut kb, my_row, ahead, (kg, vg));
                    let col = kb.add(my_col, 8 * nt as u32);
                    let xs = [f[i], f[i + 1]];
                    store_from_f32_masked(&mut kb, Dtype::F32, at, &xs, col, limit, vg);
                } else {
                    kb.st_vec(Space::Global, Ty::F32, at, &[f[i].into(), f[i + 1].into()]);
                }
            }
        }
    }
    kb.place(done);
    kb.ret();
    kb.finish()
}
