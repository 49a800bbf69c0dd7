//! Phase 1 of the two-phase chunkwise forward ([`super::chunkwise_two_phase`]): one CTA per
//! (row b, head h, full segment s < S−1[, V-slice]) walks its segment's chunks from a zero
//! state and writes the segment's local end state
//!
//! ```text
//! Local_s = Σ_{m in [sL, sL+L)} γ^(sL+L−1−m) k_mᵀ v_m        (f32, K×V)
//! R = 0; for each chunk of the segment: R ← γ^L R + Kᵀ (V ⊙ ζ), ζ_j = γ^(L−1−j)
//! ```
//!
//! — the chunkwise state update alone: no q, no o. The last segment's state is phase 2's
//! business (it ends in H_T), so the grid covers S−1 segments.
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses):
//!
//! | # | name            | type   | meaning                                              |
//! |---|-----------------|--------|------------------------------------------------------|
//! | 0 | `p_k`           | `.u64` | k `[B,T,H,K]` in the spec's dtype                    |
//! | 1 | `p_v`           | `.u64` | v `[B,T,H,V]` in dtype                               |
//! | 2 | `p_states`      | `.u64` | f32 `[B,H,S−1,K,V]` (written), S = ⌈T/L⌉             |
//! | 3 | `p_t`           | `.u32` | T, tokens per row                                    |
//! | 4 | `p_segment_len` | `.u32` | L, tokens per segment (a multiple of C)              |
//! | 5 | `p_heads`       | `.u32` | H — runtime-γ variant only                           |
//! | 6 | `p_log2_gamma`  | `.u64` | log2 γ_h, f32 `[H]` — runtime-γ variant only         |
//!
//! Grid `(B, H, (S−1)·slices)`, `ctaid.z = s·slices + slice`. f16/bf16 run on tensor cores
//! ([`super::chunk_states_tc`], K/16 warps, one 16-row state slice each, at most 128
//! columns of V per CTA);
//! everything else runs the FMA path below (256 threads, f32 state in shared memory,
//! [`value_slice`] columns of V per CTA). Numerics as [`super::chunkwise`].

use super::chunk_states_tc;
use super::chunkwise::{self, Stager, THREADS, load4_f32, max_dynamic_shared, select_log2_gamma};
use super::chunkwise_fma::{
    StagedChunk, accumulate_decayed_outer, for_each_piece, load_piece, store_piece,
};
use super::chunkwise_tc::uses_tensor_cores;
use super::chunkwise_two_phase::{segment_bounds, stored_states};
use super::{decay, unsupported};
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, Operand, ParamRef, Reg, Rounding, Space, Sreg, Ty,
};
use crate::spec::{GammaSet, KernelOp, KernelSpec};
use crate::{GenError, LaunchGeometry};

/// Byte offsets of the f32 arrays in the FMA path's dynamic shared window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatesLayout {
    /// R `[K][V slice]`: the state.
    pub r: u32,
    /// Kᵀ `[K][C]`.
    pub kt: u32,
    /// V `[C][V slice]`.
    pub v: u32,
    /// γ^d for d = 0..=C.
    pub decay: u32,
    /// Total bytes.
    pub total: u32,
}

impl StatesLayout {
    /// The layout for head dim `k`, V-slice `vs` and chunk `c`.
    pub const fn new(k: u32, vs: u32, c: u32) -> Self {
        let r = 0;
        let kt = r + k * vs * 4;
        let v = kt + k * c * 4;
        let decay = v + c * vs * 4;
        StatesLayout {
            r,
            kt,
            v,
            decay,
            total: decay + ((c + 1) * 4).div_ceil(16) * 16,
        }
    }
}

/// Check that phase 1 serves `spec`: the `chunk_states` op on a shape the chunkwise
/// forward serves (phase 2 must serve it too).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for another op, or as [`chunkwise::validate`].
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    if spec.op != KernelOp::ChunkStates {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "the chunk-states generator emits chunk_states only",
        ));
    }
    super::chunkwise_two_phase::check_envelope(spec)?;
    chunkwise::validate(&KernelSpec {
        op: KernelOp::ChunkwiseSegmented,
        ..*spec
    })
}

/// Columns of V one FMA-path CTA serves: all of V when its tiles fit the arch's shared
/// memory, else the widest halving (down to 64) that fits; on tensor cores
/// [`chunk_states_tc::value_slice`].
pub fn value_slice(spec: &KernelSpec) -> u32 {
    if uses_tensor_cores(spec) {
        return chunk_states_tc::value_slice(spec);
    }
    let c = spec.chunk.unwrap_or_default();
    let mut vs = spec.v;
    while vs > 64 && StatesLayout::new(spec.k, vs, c).total > max_dynamic_shared(spec.arch) {
        vs /= 2;
    }
    vs
}

/// The launch for ONE segment per (row, head): grid `(rows, heads, V / value_slice)`;
/// [`super::chunkwise_two_phase::two_phase_plan`] multiplies z by S − 1.
///
/// # Errors
/// As [`chunkwise::launch_geometry`].
pub fn launch_geometry(
    spec: &KernelSpec,
    rows: u32,
    heads: u32,
) -> Result<LaunchGeometry, GenError> {
    validate(spec)?;
    super::check_grid(spec, rows, heads)?;
    let c = spec.chunk.unwrap_or_default();
    let (threads, smem) = if uses_tensor_cores(spec) {
        (
            32 * chunk_states_tc::warps(spec),
            chunk_states_tc::TcStatesLayout::new(spec.k, value_slice(spec), c).total,
        )
    } else {
        (
            THREADS,
            StatesLayout::new(spec.k, value_slice(spec), c).total,
        )
    };
    Ok(LaunchGeometry {
        grid: [rows, heads, spec.v / value_slice(spec)],
        block: [threads, 1, 1],
        dynamic_smem_bytes: smem,
    })
}

/// Parameter names in launch order (see the module table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let mut names = vec!["p_k", "p_v", "p_states", "p_t", "p_segment_len"];
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// The parameters of both phase-1 paths, declared once in the table's order.
pub(crate) struct StatesParams {
    pub k: ParamRef,
    pub v: ParamRef,
    pub states: ParamRef,
    pub t: ParamRef,
    pub segment_len: ParamRef,
    /// `p_heads` and `p_log2_gamma`, runtime-γ only.
    pub runtime: Option<(ParamRef, ParamRef)>,
}

/// Declare [`StatesParams`]; `runtime_gamma` adds the runtime-γ pair.
pub(crate) fn declare_params(kb: &mut KernelBuilder, runtime_gamma: bool) -> StatesParams {
    StatesParams {
        k: kb.param("p_k", Ty::U64),
        v: kb.param("p_v", Ty::U64),
        states: kb.param("p_states", Ty::U64),
        t: kb.param("p_t", Ty::U32),
        segment_len: kb.param("p_segment_len", Ty::U32),
        runtime: runtime_gamma.then(|| {
            (
                kb.param("p_heads", Ty::U32),
                kb.param("p_log2_gamma", Ty::U64),
            )
        }),
    }
}

/// H and log2 γ_h of head `h`: from the runtime-γ parameters, or the named set's immediates.
pub(crate) fn heads_and_log2_gamma(
    kb: &mut KernelBuilder,
    runtime: Option<&(ParamRef, ParamRef)>,
    log2_gammas: Option<&[f32]>,
    h: Reg,
) -> (Reg, Reg) {
    match (runtime, log2_gammas) {
        (Some((p_heads, p_log2)), _) => {
            let heads = kb.ld_param(p_heads);
            let table = kb.global_ptr(p_log2);
            let off = kb.mul_wide(h, 4u32);
            let at = kb.add(table, off);
            (heads, kb.ld(Space::Global, Ty::F32, Address::reg(at, 0)))
        }
        (None, Some(l)) => {
            kb.comment("log2 gamma_h: exact f32 immediates, one per head");
            let heads = kb.mov(Ty::U32, l.len() as u32);
            (heads, select_log2_gamma(kb, l, h))
        }
        (None, None) => {
            kb.comment("no decays: a gamma set is either named or runtime");
            let heads = kb.mov(Ty::U32, 1u32);
            (heads, kb.mov(Ty::F32, 0.0f32))
        }
    }
}

/// The segment a phase-1 CTA owns and where its local state goes: (first token, length,
/// byte offset of `Local_s[b,h]` in the workspace).
pub(crate) struct StatesSegment {
    pub start: Reg,
    pub len: Reg,
    pub state_bytes: Reg,
}

/// Locate CTA `(b, h, ctaid.z)`'s segment (`slices` V-slices per segment).
pub(crate) fn states_segment(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    p: &StatesParams,
    slices: u32,
    (b, h, heads): (Reg, Reg, Reg),
) -> StatesSegment {
    kb.comment("segment s = ctaid.z / slices: tokens sL.. of row b; Local_s at [b,h,s]");
    let t = kb.ld_param(&p.t);
    let raw_len = kb.ld_param(&p.segment_len);
    let segment_len = kb.max(raw_len, 1u32);
    let tok0 = kb.mul_lo(b, t);
    let (s, start, len, _) = segment_bounds(kb, slices, segment_len, tok0, t);
    let stored = stored_states(kb, t, segment_len);
    let bh = kb.mad_lo(b, heads, h);
    let bhs = kb.mad_lo(bh, stored, s);
    let state_bytes = kb.mul_wide(bhs, spec.k * spec.v * 4);
    StatesSegment {
        start,
        len,
        state_bytes,
    }
}

/// Emit phase 1 for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    if uses_tensor_cores(spec) {
        return chunk_states_tc::generate(spec);
    }
    let (kd, vd) = (spec.k, spec.v);
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
    let stage_k = Stager::new(&mut kb, t, kd, c);
    let stage_v = Stager::new(&mut kb, t, vs, c);
    let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kd * es);
    let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vd * es);
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
        let k_off = kb.mad_wide(th_k, kd * es, col_k_bytes);
        let k_first = kb.add(k, k_off);
        let sh_k = kb.add(st_kt, lay.kt);
        stage_k.run(
            kb,
            k_first,
            round_step_k,
            len,
            sh_k,
            stage_k.rows_per_round * 4,
            |kb, at, sh| {
                let xs = load4_f32(kb, spec.dtype, Address::reg(at, 0));
                for (e, &x) in xs.iter().enumerate() {
                    let off = i64::from(e as u32 * c * 4);
                    kb.st(Space::Shared, Address::reg(sh, off), x);
                }
            },
        );
        let tok_v = kb.add(tok_c, stage_v.row);
        let th_v = kb.mad_lo(tok_v, heads, h);
        let v_goff = kb.mad_wide(th_v, vd * es, col_v_bytes);
        let v_first = kb.add(v, v_goff);
        let sh_v = kb.add(st_v, lay.v);
        stage_v.run(
            kb,
            v_first,
            round_step_v,
            len,
            sh_v,
            stage_v.rows_per_round * vs * 4,
            |kb, at, sh| {
                let xs = load4_f32(kb, spec.dtype, Address::reg(at, 0));
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
