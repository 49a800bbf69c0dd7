//! The FMA path of phase 1 (f32 inputs): 256 threads, the f32 state in shared memory,
//! [`super::value_slice`] columns of V per CTA. Math, parameters and grid: the family's
//! module docs.

use super::{StatesLayout, declare_params, states_segment, value_slice};
use crate::GenError;
use crate::blocks::decay::{self, heads_and_log2_gamma};
use crate::blocks::fma::{
    StagedChunk, accumulate_decayed_outer, for_each_piece, load_piece, store_piece,
};
use crate::blocks::staging::Stager;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, Rounding, Space, Sreg, Ty};
use crate::math::chunk_tiling::{THREADS, exact_dims, tile_spec};
use crate::spec::KernelSpec;

/// Emit the FMA phase 1 for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles and the workspace states are the padded dims (kd, vd); k and v rows keep the
    // real (kg, vg), staged with masked tails.
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let vs = value_slice(spec);
    let c = spec.chunk.unwrap_or_default();
    let es = spec.dtype.size_bytes() as u32;
    let lay = StatesLayout::new(kd, vs, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!(
        "retention chunk states (two-phase, phase 1): {}",
        spec.slug()
    ));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header("R = 0 ; per chunk R <- g^L R + K^T (V . zeta) ; Local_s = R  (f32 state on chip)");
    kb.max_threads(THREADS);
    kb.min_ctas_per_sm(1);
    let p = declare_params(&mut kb, log2_gammas.is_none());
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 R [K,Vs] @{}, K^T [K,C] @{}, V [C,Vs] @{}, gamma^d [C+1] @{}",
            lay.r, lay.kt, lay.v, lay.decay
        ),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y, segment and V-slice ctaid.z)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) =
        heads_and_log2_gamma(&mut kb, p.runtime.as_ref(), log2_gammas.as_deref(), h);
    let slices = vd / vs;
    let seg = states_segment(&mut kb, spec, &p, slices, (b, h, heads));
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
        "R = 0; this CTA serves V columns {vs}z'.. (z' = ctaid.z mod {slices})"
    ));
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let slice = kb.and(z, slices - 1);
    let v_col0 = kb.mul_lo(slice, vs);
    let state_groups = vs / 4;
    let state_col = kb.and(t, state_groups - 1);
    let state_col4 = kb.shl(state_col, 2u32);
    let state_row = kb.shr(t, state_groups.trailing_zeros());
    let state_rows_per_round = THREADS / state_groups;
    let g_col = kb.add(v_col0, state_col4);
    let g_elem = kb.mad_lo(state_row, vd, g_col);
    let g_elem_bytes = kb.mul_wide(g_elem, 4u32);
    let my_state = kb.add(base, t16); // R as [K*vs/4] groups of 4, group t first
    let state_rounds = kd * vs / 4 / THREADS;
    let global_round = i64::from(state_rows_per_round * vd * 4);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let zero: Operand = 0.0f32.into();
        kb.st_vec(
            Space::Shared,
            Ty::F32,
            Address::reg(my_state, off + i64::from(lay.r)),
            &[zero; 4],
        );
    }
    kb.bar_sync(0);

    kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
    let stage_k = Stager::new(&mut kb, t, kd, c, THREADS);
    let stage_v = Stager::new(&mut kb, t, vs, c, THREADS);
    let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kg * es);
    let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vg * es);
    let k = kb.global_ptr(&p.k);
    let v = kb.global_ptr(&p.v);
    let col_k_bytes = kb.mul_wide(stage_k.col, es);
    let v_col = kb.add(stage_v.col, v_col0);
    let col_v_bytes = kb.mul_wide(v_col, es);
    let kt_elem = kb.mad_lo(stage_k.col, c, stage_k.row);
    let kt_off = kb.shl(kt_elem, 2u32);
    let st_kt = kb.add(base, kt_off);
    let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
    let v_off = kb.shl(v_elem, 2u32);
    let st_v = kb.add(base, v_off);

    kb.comment(format!("walk the segment in chunks of {c}"));
    kb.for_range(0u32, seg.len, c, |kb, c0| {
        let remaining = kb.sub(seg.len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(seg.start, c0);

        kb.comment("stage k^T and v of rows < L as f32");
        let tok_k = kb.add(tok_c, stage_k.row);
        let th_k = kb.mad_lo(tok_k, heads, h);
        let k_off = kb.mad_wide(th_k, kg * es, col_k_bytes);
        let k_first = kb.add(k, k_off);
        let sh_k = kb.add(st_kt, lay.kt);
        stage_k.stage_f32(
            kb,
            spec.dtype,
            (k_first, round_step_k),
            len,
            (sh_k, stage_k.rows_per_round * 4),
            tail.then_some((stage_k.col, kg)),
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
        stage_v.stage_f32(
            kb,
            spec.dtype,
            (v_first, round_step_v),
            len,
            (sh_v, stage_v.rows_per_round * vs * 4),
            tail.then_some((v_col, vg)),
            |kb, xs, sh| {
                let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
            },
        );
        kb.bar_sync(0);

        kb.comment("R <- gamma^L R + sum_{j<L} gamma^(L-1-j) k_j^T v_j");
        update_state(kb, &lay, base, t, (kd, vs, c), len);
        kb.bar_sync(0);
    });

    kb.comment("Local_s[b,h] = R");
    let states = kb.global_ptr(&p.states);
    let at = kb.add(states, seg.state_bytes);
    let at = kb.add(at, g_elem_bytes);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let x = kb.ld_vec(
            Space::Shared,
            Ty::F32,
            4,
            Address::reg(my_state, off + i64::from(lay.r)),
        );
        let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
        kb.st_vec(
            Space::Global,
            Ty::F32,
            Address::reg(at, i64::from(r) * global_round),
            &x,
        );
    }
    kb.ret();
    kb.finish()
}

/// `R ← γ^L R + Σ_{j<L} γ^(L−1−j) k_jᵀ v_j` over the shared tiles, every thread its 4×4
/// pieces of R (`dims` = (K, V slice, C)).
fn update_state(
    kb: &mut KernelBuilder,
    lay: &StatesLayout,
    base: Reg,
    t: Reg,
    (kd, vs, c): (u32, u32, u32),
    len: Reg,
) {
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
        let r_at = kb.add(r_at, lay.r);
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
}
