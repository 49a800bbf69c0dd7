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

use retention_core::Dtype;

use crate::GenError;
use crate::blocks::decay::{self, heads_and_log2_gamma};
use crate::blocks::fma::{
    Acc4x4, StagedChunk, accumulate_decayed_outer, accumulate_shared, for_each_piece, load_piece,
    store_piece, zero_acc,
};
use crate::blocks::global::{
    load4_f32_masked, row_limit, state_row_limit, store_from_f32_masked, store4_from_f32,
};
use crate::blocks::staging::Stager;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, Rounding, Space, Sreg, Ty};
use crate::math::chunk_params::{ChunkwiseParams, declare_params, sequence_bounds};
use crate::math::chunk_tiling::{SharedLayout, THREADS, exact_dims, tile_spec};
use crate::spec::KernelSpec;

/// Emit the blocked FMA chunkwise forward for `spec` (validated by the caller), with blocks of
/// `blk` rows and `vs` columns of V per CTA.
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
#[allow(clippy::too_many_lines)]
pub fn generate(spec: &KernelSpec, blk: u32, vs: u32) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles are generated for the padded K (kd); global rows keep the real (kg, vg).
    let kd = tile_spec(spec).k;
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let c = spec.chunk.unwrap_or_default();
    let es = spec.dtype.size_bytes() as u32;
    let lay = SharedLayout::blocked(kd, vs, blk, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!(
        "retention chunkwise forward (FMA, blocks of {blk}): {}",
        spec.slug()
    ));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header(
        "O_I = ((sQ_I) R) . xi + sum_{J<=I} ((sQ_I) K_J^T . D_IJ) V_J ; R <- g^L R + sum_J K_J^T (V_J . zeta)",
    );
    kb.max_threads(THREADS);
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
        runtime,
        // The two-phase forward does not take the blocked path (its envelope excludes it).
        segments: _,
    } = declare_params(&mut kb, spec, log2_gammas.is_none());
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 R [K,V] @{}, (sQ_I)^T [K,B] @{}, K_J^T [K,B] @{}, V_J [B,V] @{}, S_IJ^T [B,B] @{}, gamma^d [C+1] @{}",
            lay.r, lay.qt, lay.kt, lay.v, lay.st, lay.decay
        ),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y, V slice ctaid.z)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, runtime.as_ref(), log2_gammas.as_deref(), h);
    let (tok0, seq_len) = sequence_bounds(&mut kb, spec, &p_t, b);
    let scale = kb.ld_param(&p_scale);
    let base = kb.shared_addr(&smem);
    let t16 = kb.shl(t, 4u32);

    kb.comment(format!(
        "decay table gamma^d = 2^(d log2 gamma), d = 0..={c}, relative exponents only"
    ));
    for round in 0..(c + 1).div_ceil(THREADS) {
        let d_int = kb.add(t, round * THREADS);
        let in_table = kb.setp(Cmp::Le, d_int, c);
        kb.guarded(in_table, false, |kb| {
            let d = kb.cvt(Ty::F32, d_int, Some(Rounding::Rn));
            let x = kb.mul(d, log2_gamma);
            let g = decay::emit_exp2(kb, x);
            let d4 = kb.shl(d_int, 2u32);
            let at = kb.add(base, d4);
            kb.st(Space::Shared, Address::reg(at, i64::from(lay.decay)), g);
        });
    }

    kb.comment(format!(
        "R = H0[b,h][:, {vs}z..{vs}z+{vs}] when given, else 0 (z = ctaid.z)"
    ));
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let v_col0 = kb.mul_lo(z, vs); // first V column of this CTA
    let bh = kb.mad_lo(b, heads, h);
    let bh_bytes = kb.mul_wide(bh, kg * vg * 4);
    let state_groups = vs / 4;
    let state_col = kb.and(t, state_groups - 1);
    let state_col4 = kb.shl(state_col, 2u32);
    let state_row = kb.shr(t, state_groups.trailing_zeros());
    let state_rows_per_round = THREADS / state_groups;
    let g_col = kb.add(v_col0, state_col4);
    let g_elem = kb.mad_lo(state_row, vg, g_col);
    let g_elem_bytes = kb.mul_wide(g_elem, 4u32);
    let state_bytes = kb.add(bh_bytes, g_elem_bytes);
    let my_state = kb.add(base, t16);
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
        let zz: Operand = 0.0f32.into();
        kb.st_vec(
            Space::Shared,
            Ty::F32,
            Address::reg(my_state, off),
            &[zz; 4],
        );
    }
    kb.place(state_ready);
    kb.bar_sync(0);

    kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
    let stage_k = Stager::new(&mut kb, t, kd, blk, THREADS);
    let stage_v = Stager::new(&mut kb, t, vs, blk, THREADS);
    let tok_stride_v = kb.mul_wide(heads, vg * es);
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
    let qt_elem = kb.mad_lo(stage_k.col, blk, stage_k.row);
    let qt_off = kb.shl(qt_elem, 2u32);
    let st_qt = kb.add(base, qt_off); // + lay.qt / lay.kt
    let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
    let v_off = kb.shl(v_elem, 2u32);
    let st_v = kb.add(base, v_off); // + lay.v
    let kt_step = stage_k.rows_per_round * 4;
    let (k_tail, v_tail) = (
        tail.then_some((stage_k.col, kg)),
        tail.then_some((v_col, vg)),
    );
    let v_step = stage_v.rows_per_round * vs * 4;

    // Stage rows `tok`.. (block length `len_blk`) of k as K^T and of v into their tiles.
    let stage_kv = |kb: &mut KernelBuilder, tok: Reg, len_blk: Reg| {
        let tok_k = kb.add(tok, stage_k.row);
        let th_k = kb.mad_lo(tok_k, heads, h);
        let k_off = kb.mad_wide(th_k, kg * es, col_k_bytes);
        let k_first = kb.add(k, k_off);
        let sh_k = kb.add(st_qt, lay.kt);
        stage_k.stage_f32(
            kb,
            spec.dtype,
            (k_first, round_step_k),
            len_blk,
            (sh_k, kt_step),
            k_tail,
            |kb, xs, sh| {
                for (e, &x) in xs.iter().enumerate() {
                    let off = i64::from(e as u32 * blk * 4);
                    kb.st(Space::Shared, Address::reg(sh, off), x);
                }
            },
        );
        let tok_v = kb.add(tok, stage_v.row);
        let th_v = kb.mad_lo(tok_v, heads, h);
        let v_goff = kb.mad_wide(th_v, vg * es, col_v_bytes);
        let v_first = kb.add(v, v_goff);
        let sh_v = kb.add(st_v, lay.v);
        stage_v.stage_f32(
            kb,
            spec.dtype,
            (v_first, round_step_v),
            len_blk,
            (sh_v, v_step),
            v_tail,
            |kb, xs, sh| {
                let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
            },
        );
    };
    // Block `idx` of the chunk at `tok_c` with `len` rows: its first row, token and length.
    let block_at = |kb: &mut KernelBuilder, idx: Reg, tok_c: Reg, len: Reg| {
        let row0 = kb.shl(idx, blk.trailing_zeros());
        let left = kb.sub(len, row0);
        let len_blk = kb.min(left, blk);
        let tok = kb.add(tok_c, row0);
        (row0, tok, len_blk)
    };

    kb.comment(format!(
        "walk the sequence in chunks of {c}, blocks of {blk}"
    ));
    kb.for_range(0u32, seq_len, c, |kb, c0| {
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);
        let len_up = kb.add(len, blk - 1);
        let blocks = kb.shr(len_up, blk.trailing_zeros());

        kb.for_range(0u32, blocks, 1, |kb, bi| {
            let (row_i, tok_i, len_i) = block_at(kb, bi, tok_c, len);
            kb.comment("stage (s q_I)^T of rows < L_I as f32");
            let tok_q = kb.add(tok_i, stage_k.row);
            let th_q = kb.mad_lo(tok_q, heads, h);
            let q_off = kb.mad_wide(th_q, kg * es, col_k_bytes);
            let q_first = kb.add(q, q_off);
            let sh_q = kb.add(st_qt, lay.qt);
            stage_k.stage_f32(
                kb,
                spec.dtype,
                (q_first, round_step_k),
                len_i,
                (sh_q, kt_step),
                k_tail,
                |kb, xs, sh| {
                    for (e, &x) in xs.iter().enumerate() {
                        let xq = kb.mul(x, scale);
                        let off = i64::from(e as u32 * blk * 4);
                        kb.st(Space::Shared, Address::reg(sh, off), xq);
                    }
                },
            );
            kb.bar_sync(0);

            kb.comment("O_I = xi . ((sQ_I) R), xi_i = gamma^(i+1) (i chunk-relative)");
            let row_i4 = kb.shl(row_i, 2u32);
            let mut o_acc: Vec<Acc4x4> = Vec::new();
            for_each_piece(kb, t, THREADS, blk, vs, |kb, p| {
                let acc = zero_acc(kb);
                let a_off = kb.shl(p.row, 2u32);
                let a_base = kb.add(base, a_off);
                let a = kb.add(a_base, lay.qt);
                let b_off = kb.shl(p.col, 2u32);
                let b_base = kb.add(base, b_off);
                let bb = kb.add(b_base, lay.r);
                accumulate_shared(kb, &acc, a, blk * 4, bb, vs * 4, kd);
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
                let (row_j, tok_j, len_j) = block_at(kb, bj, tok_c, len);
                kb.comment("stage k_J^T and v_J of rows < L_J as f32");
                stage_kv(kb, tok_j, len_j);
                kb.bar_sync(0);

                kb.comment(
                    "S_IJ^T[j][i] = (i >= j) ? gamma^(i-j) (sQ_i . k_j) : 0, i, j chunk-relative",
                );
                // i - j = (row_i - row_j) + (i0 + r) - (j0 + cc); `diff` adds B so the causal
                // test and the clamped table index stay unsigned.
                let off_ij = kb.sub(row_i, row_j);
                for_each_piece(kb, t, THREADS, blk, blk, |kb, p| {
                    let acc = zero_acc(kb);
                    let a_off = kb.shl(p.row, 2u32);
                    let a = kb.add(base, a_off);
                    let a = kb.add(a, lay.qt);
                    let b_off = kb.shl(p.col, 2u32);
                    let bb = kb.add(base, b_off);
                    let bb = kb.add(bb, lay.kt);
                    accumulate_shared(kb, &acc, a, blk * 4, bb, blk * 4, kd);
                    let row_in_chunk = kb.add(p.row, off_ij);
                    let shifted = kb.add(row_in_chunk, blk);
                    let diff = kb.sub(shifted, p.col);
                    let dst_elem = kb.mad_lo(p.col, blk, p.row);
                    let dst_off = kb.shl(dst_elem, 2u32);
                    let dst = kb.add(base, dst_off);
                    let mut masked = [[acc[0][0]; 4]; 4];
                    for r in 0..4u32 {
                        let dr = kb.add(diff, r);
                        for cc in 0..4u32 {
                            let causal = kb.setp(Cmp::Ge, dr, blk + cc);
                            let clamped = kb.max(dr, blk + cc);
                            let cl4 = kb.shl(clamped, 2u32);
                            let at = kb.add(base, cl4);
                            let d = kb.ld(
                                Space::Shared,
                                Ty::F32,
                                Address::reg(at, i64::from(lay.decay) - i64::from(4 * (blk + cc))),
                            );
                            let val = kb.mul(acc[r as usize][cc as usize], d);
                            masked[cc as usize][r as usize] = kb.selp(val, 0.0f32, causal);
                        }
                    }
                    let dst = kb.add(dst, lay.st);
                    store_piece(kb, &masked, dst, blk * 4);
                });
                kb.bar_sync(0);

                kb.comment("O_I += S_IJ V_J over j < L_J");
                let mut next = o_acc.iter();
                for_each_piece(kb, t, THREADS, blk, vs, |kb, p| {
                    let acc = next.next().expect("one accumulator per piece round");
                    let a_off = kb.shl(p.row, 2u32);
                    let a_base = kb.add(base, a_off);
                    let a = kb.add(a_base, lay.st);
                    let b_off = kb.shl(p.col, 2u32);
                    let b_base = kb.add(base, b_off);
                    let bb = kb.add(b_base, lay.v);
                    accumulate_shared(kb, acc, a, blk * 4, bb, vs * 4, len_j);
                });
                kb.bar_sync(0);
            });

            kb.comment("O_I rows < L_I to global");
            let mut next = o_acc.iter();
            for_each_piece(kb, t, THREADS, blk, vs, |kb, p| {
                let acc = next.next().expect("one accumulator per piece round");
                let tok = kb.add(tok_i, p.row);
                let th = kb.mad_lo(tok, heads, h);
                let o_col = kb.add(p.col, v_col0);
                let col_bytes = kb.mul_wide(o_col, es);
                let o_off = kb.mad_wide(th, vg * es, col_bytes);
                let mut at = kb.add(o, o_off);
                for r in 0..4u32 {
                    if r > 0 {
                        at = kb.add(at, tok_stride_v);
                    }
                    let i = kb.add(p.row, r);
                    let inside = kb.setp(Cmp::Lt, i, len_i);
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
        });

        kb.comment("R <- gamma^L R + sum_J K_J^T (V_J . zeta), last block first (still staged)");
        let len4 = kb.shl(len, 2u32);
        let g_len_at = kb.add(base, len4);
        let g_len = kb.ld(
            Space::Shared,
            Ty::F32,
            Address::reg(g_len_at, i64::from(lay.decay)),
        );
        kb.for_range(0u32, blocks, 1, |kb, step| {
            let last = kb.sub(blocks, 1u32);
            let bj = kb.sub(last, step);
            let (row_j, tok_j, len_j) = block_at(kb, bj, tok_c, len);
            let first = kb.setp(Cmp::Eq, step, 0u32);
            let staged = kb.label();
            kb.bra_if(first, false, staged);
            stage_kv(kb, tok_j, len_j);
            kb.place(staged);
            kb.bar_sync(0);
            let factor = kb.selp(g_len, 1.0f32, first);
            // zeta_j = gamma^(L-1-row_j-jj), jj = 0.. walks the table down.
            let zeta0 = kb.sub(len, row_j);
            let zeta0_4 = kb.shl(zeta0, 2u32);
            let zeta_at = kb.add(base, zeta0_4);
            for_each_piece(kb, t, THREADS, kd, vs, |kb, p| {
                let r_elem = kb.mad_lo(p.row, vs, p.col);
                let r_off = kb.shl(r_elem, 2u32);
                let r_at = kb.add(base, r_off);
                let old = load_piece(kb, r_at, vs * 4);
                let acc: [[Reg; 4]; 4] =
                    std::array::from_fn(|r| std::array::from_fn(|cc| kb.mul(old[r][cc], factor)));
                let staged = StagedChunk {
                    kt: lay.kt,
                    kt_rows: blk,
                    v: lay.v,
                    vs,
                };
                let zeta = (zeta_at, lay.decay - 4);
                accumulate_decayed_outer(kb, &acc, (base, &p), &staged, zeta, len_j);
                store_piece(kb, &acc, r_at, vs * 4);
            });
            kb.bar_sync(0);
        });
    });

    kb.comment("H_T[b,h] = R when asked for");
    let ht_raw = kb.ld_param(&p_ht);
    let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
    let done = kb.label();
    kb.bra_if(has_ht, true, done);
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
