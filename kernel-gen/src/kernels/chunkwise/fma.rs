//! The FMA path of the chunkwise forward (f32 inputs): one CTA per (row b, head h, slice z
//! of V) with 256 threads, the f32 state R in shared memory, chunks that shared memory holds
//! whole (longer ones: [`super::fma_blocked`]). Math, parameters and grid as the family's
//! module docs say.

use retention_core::Dtype;

use crate::GenError;
use crate::blocks::decay::{self, heads_and_log2_gamma};
use crate::blocks::fma::{
    StagedChunk, accumulate_decayed_outer, accumulate_shared, for_each_piece, load_piece,
    store_piece, zero_acc,
};
use crate::blocks::global::{
    load4_f32_masked, row_limit, state_row_limit, store_from_f32_masked, store4_from_f32,
};
use crate::blocks::staging::Stager;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, Rounding, Space, Sreg, Ty};
use crate::math::chunk_params::{ChunkwiseParams, declare_params, sequence_bounds};
use crate::math::chunk_tiling::{SharedLayout, THREADS, exact_dims, tile_spec, value_slice};
use crate::math::segment_fold;
use crate::spec::KernelSpec;

/// Emit the whole-chunk FMA chunkwise forward for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded dims (K: kd); global rows keep the real (kg, vg).
    let tile = tile_spec(spec);
    let kd = tile.k;
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let vs = value_slice(spec); // columns of V this CTA serves
    let c = spec.chunk.unwrap_or_default();
    let es = spec.dtype.size_bytes() as u32;
    let lay = SharedLayout::new(kd, vs, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("retention chunkwise forward: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header(
        "O = ((sQ) R) . xi + ((sQ) K^T . D) V ; R <- g^L R + K^T (V . zeta)  (f32 state on chip)",
    );
    kb.max_threads(THREADS);
    // Shared memory (over 80 KiB) already limits the path to one or two CTAs per SM; let
    // ptxas budget registers for one rather than spill.
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
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 R [K,V] @{}, (sQ)^T [K,C] @{}, K^T [K,C] @{}, V [C,V] @{}, S^T [C,C] @{}, gamma^d [C+1] @{}",
            lay.r, lay.qt, lay.kt, lay.v, lay.st, lay.decay
        ),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, runtime.as_ref(), log2_gammas.as_deref(), h);
    let (tok0, seq_len) = sequence_bounds(&mut kb, spec, &p_t, b);
    let (tok0, seq_len, segment) =
        segment_fold::segment_of(&mut kb, spec, segments.as_ref(), &p_t, tok0, seq_len);
    let scale = kb.ld_param(&p_scale);
    let base = kb.shared_addr(&smem);
    let t4 = kb.shl(t, 2u32);
    let t16 = kb.shl(t, 4u32);

    kb.comment(format!(
        "decay table gamma^d = 2^(d log2 gamma), d = 0..={c}, relative exponents only"
    ));
    let in_table = kb.setp(Cmp::Le, t, c);
    kb.guarded(in_table, false, |kb| {
        let d = kb.cvt(Ty::F32, t, Some(Rounding::Rn));
        let x = kb.mul(d, log2_gamma);
        let g = decay::emit_exp2(kb, x);
        let at = kb.add(base, t4);
        kb.st(Space::Shared, Address::reg(at, i64::from(lay.decay)), g);
    });

    kb.comment(format!(
        "R = H0[b,h][:, {vs}z..{vs}z+{vs}] when given, else 0 (z = ctaid.z)"
    ));
    let z = segment_fold::value_slice_index(&mut kb, spec);
    let v_col0 = kb.mul_lo(z, vs); // first V column of this CTA
    let bh = kb.mad_lo(b, heads, h);
    let bh_bytes = kb.mul_wide(bh, kg * vg * 4);
    // Thread t moves the four state columns 4(t mod vs/4).. of rows t div (vs/4) + j·R.
    let state_groups = vs / 4;
    let state_col = kb.and(t, state_groups - 1);
    let state_col4 = kb.shl(state_col, 2u32);
    let state_row = kb.shr(t, state_groups.trailing_zeros());
    let state_rows_per_round = THREADS / state_groups;
    let g_col = kb.add(v_col0, state_col4);
    let g_elem = kb.mad_lo(state_row, vg, g_col);
    let g_elem_bytes = kb.mul_wide(g_elem, 4u32);
    let state_bytes = kb.add(bh_bytes, g_elem_bytes); // this thread's first global group
    let my_state = kb.add(base, t16); // R as [K*vs/4] groups of 4, group t first
    let state_rounds = kd * vs / 4 / THREADS;
    let global_round = i64::from(state_rows_per_round * vg * 4);
    let h0_raw = kb.ld_param(&p_h0);
    let has_h0 = kb.setp(Cmp::Ne, h0_raw, 0u64);
    let (zero_state, state_ready) = (kb.label(), kb.label());
    kb.bra_if(has_h0, true, zero_state);
    let h0 = kb.global_ptr(&p_h0);
    let h0_bh = kb.add(h0, state_bytes);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let at = Address::reg(h0_bh, i64::from(r) * global_round);
        let x = if tail {
            let limit = state_row_limit(&mut kb, state_row, r * state_rows_per_round, (kg, vg));
            load4_f32_masked(&mut kb, Dtype::F32, at, g_col, limit, vg)
        } else {
            kb.ld_vec(Space::Global, Ty::F32, 4, at)
        };
        let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_state, off), &x);
    }
    kb.bra_uni(state_ready);
    kb.place(zero_state);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let z: Operand = 0.0f32.into();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_state, off), &[z; 4]);
    }
    kb.place(state_ready);
    if let Some(seg) = &segment {
        // The workspace holds padded states: the thread's offset in a [kd][vd] tile.
        let ws_elem_bytes = if tail {
            let e = kb.mad_lo(state_row, tile.v, g_col);
            kb.mul_wide(e, 4u32)
        } else {
            g_elem_bytes
        };
        seg.fold_into_shared(&mut kb, spec, log2_gamma, bh, ws_elem_bytes, my_state);
    }
    kb.bar_sync(0);

    kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
    let stage_k = Stager::new(&mut kb, t, kd, c, THREADS);
    let stage_v = Stager::new(&mut kb, t, vs, c, THREADS);
    let tok_stride_v = kb.mul_wide(heads, vg * es); // bytes between tokens of v/o
    let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kg * es);
    let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vg * es);
    let (q, k, v, o) = (
        kb.global_ptr(&p_q),
        kb.global_ptr(&p_k),
        kb.global_ptr(&p_v),
        kb.global_ptr(&p_o),
    );
    let col_k_bytes = kb.mul_wide(stage_k.col, es);
    let v_col = kb.add(stage_v.col, v_col0);
    let col_v_bytes = kb.mul_wide(v_col, es);
    // Shared destinations of the thread's staged elements (round 0; rounds add immediates).
    let qt_elem = kb.mad_lo(stage_k.col, c, stage_k.row);
    let qt_off = kb.shl(qt_elem, 2u32);
    let st_qt = kb.add(base, qt_off); // + lay.qt / lay.kt
    let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
    let v_off = kb.shl(v_elem, 2u32);
    let st_v = kb.add(base, v_off); // + lay.v

    kb.comment(format!("walk the sequence in chunks of {c}"));
    kb.for_range(0u32, seq_len, c, |kb, c0| {
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);

        kb.comment("stage (s q)^T, k^T and v of rows < L as f32");
        let tok_k = kb.add(tok_c, stage_k.row);
        let th_k = kb.mad_lo(tok_k, heads, h);
        let qk_off = kb.mad_wide(th_k, kg * es, col_k_bytes);
        let q_first = kb.add(q, qk_off);
        let k_first = kb.add(k, qk_off);
        let kt_step = stage_k.rows_per_round * 4; // next rows: next columns of the transpose
        let sh_q = kb.add(st_qt, lay.qt);
        let k_tail = tail.then_some((stage_k.col, kg));
        stage_k.stage_f32(
            kb,
            spec.dtype,
            (q_first, round_step_k),
            len,
            (sh_q, kt_step),
            k_tail,
            |kb, xs, sh| {
                for (e, &x) in xs.iter().enumerate() {
                    let xq = kb.mul(x, scale);
                    let off = i64::from(e as u32 * c * 4);
                    kb.st(Space::Shared, Address::reg(sh, off), xq);
                }
            },
        );
        let sh_k = kb.add(st_qt, lay.kt);
        stage_k.stage_f32(
            kb,
            spec.dtype,
            (k_first, round_step_k),
            len,
            (sh_k, kt_step),
            k_tail,
            |kb, xs, sh| {
                for (e, &x) in xs.iter().enumerate() {
                    let off = i64::from(e as u32 * c * 4);
                    kb.st(Space::Shared, Address::reg(sh, off), x);
                }
            },
        );
        let tok_v = kb.add(tok_c, stage_v.row);
        let th_v = kb.mad_lo(tok_v, heads, h);
        let v_goff = kb.mad_wide(th_v, vg * es, col_v_bytes);
        let v_first = kb.add(v, v_goff);
        let sh_v = kb.add(st_v, lay.v);
        let v_step = stage_v.rows_per_round * vs * 4;
        stage_v.stage_f32(
            kb,
            spec.dtype,
            (v_first, round_step_v),
            len,
            (sh_v, v_step),
            tail.then_some((v_col, vg)),
            |kb, xs, sh| {
                let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
            },
        );
        kb.bar_sync(0);

        kb.comment("S^T[j][i] = (i >= j) ? gamma^(i-j) (sQ_i . k_j) : 0");
        for_each_piece(kb, t, THREADS, c, c, |kb, p| {
            let acc = zero_acc(kb);
            let a_off = kb.shl(p.row, 2u32);
            let a = kb.add(base, a_off);
            let a = kb.add(a, lay.qt);
            let b_off = kb.shl(p.col, 2u32);
            let bb = kb.add(base, b_off);
            let bb = kb.add(bb, lay.kt);
            accumulate_shared(kb, &acc, a, c * 4, bb, c * 4, kd);
            // diff = i0 + C - j0 >= 0; row i0+r, column j0+cc is causal iff diff + r >= C + cc.
            let shifted = kb.add(p.row, c);
            let diff = kb.sub(shifted, p.col);
            let dst_elem = kb.mad_lo(p.col, c, p.row);
            let dst_off = kb.shl(dst_elem, 2u32);
            let dst = kb.add(base, dst_off);
            let mut masked = [[acc[0][0]; 4]; 4];
            for r in 0..4u32 {
                let dr = kb.add(diff, r);
                for cc in 0..4u32 {
                    let causal = kb.setp(Cmp::Ge, dr, c + cc);
                    let clamped = kb.max(dr, c + cc);
                    let cl4 = kb.shl(clamped, 2u32);
                    let at = kb.add(base, cl4);
                    let d = kb.ld(
                        Space::Shared,
                        Ty::F32,
                        Address::reg(at, i64::from(lay.decay - 4 * (c + cc))),
                    );
                    let val = kb.mul(acc[r as usize][cc as usize], d);
                    masked[cc as usize][r as usize] = kb.selp(val, 0.0f32, causal);
                }
            }
            // masked[cc][r] is S^T[j0+cc][i0+r]: one v4 store per column of S.
            let dst = kb.add(dst, lay.st);
            store_piece(kb, &masked, dst, c * 4);
        });
        kb.bar_sync(0);

        kb.comment("O[i] = xi_i (sQ_i . R) + sum_{j<L} S[i][j] v_j ; rows i < L to global");
        for_each_piece(kb, t, THREADS, c, vs, |kb, p| {
            let acc = zero_acc(kb);
            let a_off = kb.shl(p.row, 2u32);
            let a_base = kb.add(base, a_off);
            let a = kb.add(a_base, lay.qt);
            let b_off = kb.shl(p.col, 2u32);
            let b_base = kb.add(base, b_off);
            let bb = kb.add(b_base, lay.r);
            accumulate_shared(kb, &acc, a, c * 4, bb, vs * 4, kd);
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
            let tok_i = kb.add(tok_c, p.row);
            let th = kb.mad_lo(tok_i, heads, h);
            let o_col = kb.add(p.col, v_col0);
            let col_bytes = kb.mul_wide(o_col, es);
            let o_off = kb.mad_wide(th, vg * es, col_bytes);
            let mut at = kb.add(o, o_off);
            for r in 0..4u32 {
                if r > 0 {
                    at = kb.add(at, tok_stride_v);
                }
                let i = kb.add(p.row, r);
                let inside = kb.setp(Cmp::Lt, i, len);
                let row = acc[r as usize];
                if tail {
                    // Rows past L and columns past V are not stored (one guard each).
                    let limit = row_limit(kb, inside, vg);
                    let at = Address::reg(at, 0);
                    store_from_f32_masked(kb, spec.dtype, at, &row, o_col, limit, vg);
                } else {
                    kb.guarded(inside, false, |kb| {
                        store4_from_f32(kb, spec.dtype, Address::reg(at, 0), &row);
                    });
                }
            }
        });
        kb.bar_sync(0);

        kb.comment("R <- gamma^L R + sum_{j<L} gamma^(L-1-j) k_j^T v_j");
        let len4 = kb.shl(len, 2u32);
        let g_len_at = kb.add(base, len4);
        let g_len = kb.ld(
            Space::Shared,
            Ty::F32,
            Address::reg(g_len_at, i64::from(lay.decay)),
        );
        for_each_piece(kb, t, THREADS, kd, vs, |kb, p| {
            let r_elem = kb.mad_lo(p.row, vs, p.col);
            let r_off = kb.shl(r_elem, 2u32);
            let r_at = kb.add(base, r_off);
            let old = load_piece(kb, r_at, vs * 4);
            let acc: [[Reg; 4]; 4] =
                std::array::from_fn(|r| std::array::from_fn(|cc| kb.mul(old[r][cc], g_len)));
            let staged = StagedChunk {
                kt: lay.kt,
                kt_rows: c,
                v: lay.v,
                vs,
            };
            // gamma^(L-1-j) at j = 0
            let zeta = (g_len_at, lay.decay - 4);
            accumulate_decayed_outer(kb, &acc, (base, &p), &staged, zeta, len);
            store_piece(kb, &acc, r_at, vs * 4);
        });
        kb.bar_sync(0);
    });

    kb.comment("H_T[b,h] = R when asked for");
    let ht_raw = kb.ld_param(&p_ht);
    let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
    let done = kb.label();
    kb.bra_if(has_ht, true, done);
    if let Some(seg) = &segment {
        seg.skip_unless_last(&mut kb, done);
    }
    let ht = kb.global_ptr(&p_ht);
    let ht_bh = kb.add(ht, state_bytes);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let x = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(my_state, off));
        let at = Address::reg(ht_bh, i64::from(r) * global_round);
        if tail {
            let limit = state_row_limit(&mut kb, state_row, r * state_rows_per_round, (kg, vg));
            store_from_f32_masked(&mut kb, Dtype::F32, at, &x, g_col, limit, vg);
        } else {
            let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
            kb.st_vec(Space::Global, Ty::F32, at, &x);
        }
    }
    kb.place(done);
    kb.ret();
    kb.finish()
}
