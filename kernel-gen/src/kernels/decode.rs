//! The batched, slot-indexed recurrent decode step (ARCHITECTURE §1, recurrent form, one token):
//!
//! ```text
//! for every row n and head h, with S = state[slots[n], h]      (K×V, f32, in place)
//!     S ← γ_h·S + k[n,h]ᵀ v[n,h]
//!     o[n,h] = s · q[n,h] · S                                    (with the NEW state)
//! ```
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses):
//!
//! | # | name           | type   | meaning                                          |
//! |---|----------------|--------|--------------------------------------------------|
//! | 0 | `p_q`          | `.u64` | q `[N,H,K]` in the spec's dtype                  |
//! | 1 | `p_k`          | `.u64` | k `[N,H,K]` in dtype                             |
//! | 2 | `p_v`          | `.u64` | v `[N,H,V]` in dtype                             |
//! | 3 | `p_state`      | `.u64` | state pool `[slots,H,K,V]` f32, updated in place |
//! | 4 | `p_slots`      | `.u64` | slot of each row, u32 `[N]`                      |
//! | 5 | `p_o`          | `.u64` | o `[N,H,V]` in dtype (written)                   |
//! | 6 | `p_n`          | `.u32` | N, rows in the batch                             |
//! | 7 | `p_scale`      | `.f32` | s, applied to q exactly once                     |
//! | 8 | `p_heads`      | `.u32` | H — runtime-γ variant only                       |
//! | 9 | `p_log2_gamma` | `.u64` | log2 γ_h, f32 `[H]` — runtime-γ variant only     |
//!
//! The caller guarantees every slot index is inside the pool and that no two rows share a
//! slot (both would race on one state); the runtime's `StatePool` checks this.
//!
//! Head dims: any K in 1..=256 and V in 1..=512.
//!
//! Mapping ([`launch_geometry`]): one CTA per (row n, head h, value slice z) — grid
//! `(N, H, ⌈V/W⌉)`, block `(threads, 1, 1)`, no dynamic shared memory. The slice width W is
//! fixed per spec ([`value_slice`]): the default is the narrowest, and variants naming a
//! wider W in `chunk` serve larger batches — `decode_plan::decode_variant` picks one from
//! the batch, the heads and the SM count. Columns of o only need their own columns of S, so CTA
//! (n, h, z) owns state columns `zW..(z+1)W` of S and writes o's columns `zW..(z+1)W`: no
//! cross-CTA reduction, and a small batch still fills the GPU (N = 1, H = 8, V = 512: 128
//! CTAs instead of 8). Thread t owns the cw adjacent state columns `zW + cw·c..zW + cw·c+cw`
//! (c = t mod W/cw; cw = 4 when 4 divides V, else 2 or 1: [`column_width`]) of rows
//! `r, r+R, r+2R, …` (r = t div W/cw, R = cw·threads/W), so a warp touches consecutive
//! pieces of a row: every state element is read once and written once with coalesced
//! `v4.f32` accesses (`v2`/scalar when V only allows them; a row of S, v or o starts at a
//! multiple of V elements, so cw·4 bytes is the widest alignment every row guarantees). q·s
//! and k (K values each) are staged in shared memory as f32 by every slice's CTA (the only
//! extra traffic of the split: (⌈V/W⌉ − 1)·2K elements per row and head), the v slice once
//! by the first row group, and the row's slot (and runtime log2 γ_h) once by thread 0 — all
//! of these loads issued before any is used (`decode_stage`), so they cost one round trip.
//! A thread whose rows fit 32 registers loads all of them before updating any (one more
//! round trip); longer streams walk `rows_per_step` rows per step. The R partial outputs
//! per column are summed through shared memory at the end.
//!
//! Tails (emitted only for dims that have them, so K, V powers of two keep the unmasked
//! kernel): when W does not divide V, columns at or past V are masked — their state and v
//! accesses are predicated off, the staged v is zero there, and their o is not written; when
//! R·rows_per_step does not divide K, the loop runs ⌈K/(R·rows_per_step)⌉ steps and rows at
//! or past K are masked the same way (their q, k read as zero, nothing loaded or stored).
//! Masked accesses move no bytes, so the traffic stays the algorithmic minimum plus staging.
//!
//! The decay is 2^(log2 γ_h) computed by [`decay::emit_exp2`] (accurate near γ = 1): for a
//! named gamma set log2 γ_h is an f32 immediate chosen per head, for runtime γ it is loaded,
//! so both variants compute the same decay from the same log2 γ.

pub use super::decode_phases::{
    column_width, default_value_slice, slice_allowed, value_slice, value_slices,
};

use super::decode_phases::{Mapping, element_ptr, reduce_to_o, stream_state};
use super::decode_stage::{StageIn, stage_inputs};
use super::{decay, unsupported};
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Operand, Reg, SharedRef, Space, Sreg, Ty};
use crate::math::chunk_params::declare_runtime_gamma;
use crate::math::chunk_tiling::check_retnet_heads;
use crate::spec::{GammaSet, KernelOp, KernelSpec};
use crate::{GenError, GenResult, LaunchGeometry};

/// Largest key head dim served (any K in 1..=MAX_K).
pub const MAX_K: u32 = 256;
/// Largest value head dim served (any V in 1..=MAX_V).
pub const MAX_V: u32 = 512;
/// Check that this generator serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for an unsupported K, V, chunk, gamma set or tile.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    spec.check_op(
        &[KernelOp::Decode],
        "the decode generator emits decode only",
    )?;
    spec.check_head_dims((MAX_K, MAX_V), "decode")?;
    check_retnet_heads(spec.gammas)?;
    spec.check_column_threads(1024)?;
    spec.check_rows_per_step(&[1, 2, 4, 8], "one of 1, 2, 4, 8")?;
    if let Some(w) = spec.chunk
        && !slice_allowed(spec, w)
    {
        return Err(unsupported(
            "value slice (chunk)",
            w,
            format!(
                "a power of two wider than the default slice {} and below 2·V, at most {} column groups",
                default_value_slice(spec),
                spec.tile.threads
            ),
        ));
    }
    Ok(())
}

/// The launch of a decode kernel for `rows` rows and `heads` heads.
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or heads exceeds the grid's y limit (65535); spec errors as [`validate`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    super::check_grid(spec, rows, heads)?;
    Ok(LaunchGeometry {
        grid: [rows, heads, value_slices(spec)],
        block: [spec.tile.threads, 1, 1],
        dynamic_smem_bytes: 0,
    })
}

/// The parameters every decode kernel has, in launch order (runtime γ appends `p_heads`
/// and `p_log2_gamma`).
const PARAMS: [&str; 8] = [
    "p_q", "p_k", "p_v", "p_state", "p_slots", "p_o", "p_n", "p_scale",
];

/// Parameter names in launch order (see the module table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let mut names = PARAMS.to_vec();
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// log2 γ_h: the named set's immediate for head `h`, chosen by a `selp` chain.
fn select_log2_gamma(kb: &mut KernelBuilder, log2_gammas: &[f32], h: Reg) -> Reg {
    let mut g = kb.mov(Ty::F32, log2_gammas[0]);
    for (i, &l) in log2_gammas.iter().enumerate().skip(1) {
        let is_head = kb.setp(Cmp::Eq, h, i as u32);
        g = kb.selp(l, g, is_head);
    }
    g
}

/// Emit the decode kernel for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    let (k_dim, v_dim) = (spec.k, spec.v);
    let map = Mapping::new(spec);
    let slice = map.slice; // W: state columns of this CTA
    let threads = spec.tile.threads;
    let cw = map.cols;
    let esize = spec.dtype.size_bytes() as u32;
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("retention decode step: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header("S <- gamma_h * S + k^T v ; o = scale * q . S   (state f32, in place)".to_string());
    kb.max_threads(threads);

    let [p_q, p_k, p_v, p_state, p_slots, p_o, p_n, p_scale] =
        kb.params(PARAMS, &[("p_n", Ty::U32), ("p_scale", Ty::F32)]);
    let runtime = declare_runtime_gamma(&mut kb, log2_gammas.is_none());

    let s_q: SharedRef = kb.shared_array("s_q", k_dim * 4, 16, "q*scale as f32 [K]");
    let s_k = kb.shared_array("s_k", k_dim * 4, 16, "k as f32 [K]");
    let s_part = kb.shared_array("s_part", threads * cw * 4, 16, "partial o as f32 [R, W]");
    let s_v = kb.shared_array("s_v", slice * 4, 16, "this slice of v as f32 [W]");
    let s_slot = kb.shared_array("s_slot", 8, 4, "the row's slot and log2 gamma_h");

    if map.slices == 1 {
        kb.comment("one CTA per (row n = ctaid.x, head h = ctaid.y)");
    } else {
        kb.comment(format!(
            "one CTA per (row n = ctaid.x, head h = ctaid.y, columns {slice}z..{slice}z+{slice} with z = ctaid.z)"
        ));
    }
    let n = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let rows = kb.ld_param(&p_n);
    let done = kb.label();
    let past_end = kb.setp(Cmp::Ge, n, rows);
    kb.bra_if(past_end, false, done);

    let heads: Operand = match (&runtime, &log2_gammas) {
        (Some((p_heads, _)), _) => kb.ld_param(p_heads).into(),
        (None, Some(l)) => (l.len() as u32).into(),
        (None, None) => unreachable!("a gamma set is either named or runtime"),
    };

    kb.comment("row offsets: q,k at (n*H + h)*K, v,o at (n*H + h)*V");
    let nh = kb.mad_lo(n, heads, h);
    let q = kb.global_ptr(&p_q);
    let k = kb.global_ptr(&p_k);
    let v = kb.global_ptr(&p_v);
    let o = kb.global_ptr(&p_o);
    let g_q = kb.mad_wide(nh, k_dim * esize, q); // (K)
    let g_k = kb.mad_wide(nh, k_dim * esize, k); // (K)
    let mut g_v = kb.mad_wide(nh, v_dim * esize, v); // (V)
    let mut g_o = kb.mad_wide(nh, v_dim * esize, o); // (V)
    let col0 = (map.slices > 1).then(|| {
        kb.comment("this CTA's value slice: columns from z*W of v, o and the state rows");
        let z = kb.sreg(Sreg::Ctaid(Axis::Z));
        kb.shl(z, slice.trailing_zeros())
    });
    if let Some(col0) = col0 {
        g_v = element_ptr(&mut kb, g_v, col0, esize);
        g_o = element_ptr(&mut kb, g_o, col0, esize);
    }
    // Columns of this slice inside V (only a masked tail needs it).
    let cols_left = (map.col_tail && map.slices > 1).then(|| {
        let col0 = col0.expect("several slices have a slice index");
        kb.sub(v_dim, col0)
    });

    let scale = kb.ld_param(&p_scale);
    let stage_in = StageIn {
        t,
        n,
        h,
        g_q,
        g_k,
        g_v,
        cols_left,
        scale,
        p_slots: &p_slots,
        p_log2_gamma: runtime.as_ref().map(|(_, p)| p),
        s_q: &s_q,
        s_k: &s_k,
        s_v: &s_v,
        s_slot: &s_slot,
    };
    let staged = stage_inputs(&mut kb, spec, &map, &stage_in);
    kb.bar_sync(0);

    let log2_gamma = match &log2_gammas {
        None => kb.ld(Space::Shared, Ty::F32, Address::reg(staged.slot_addr, 4)),
        Some(l) => {
            kb.comment("log2 gamma_h: exact f32 immediates, one per head");
            select_log2_gamma(&mut kb, l, h)
        }
    };
    let gamma = decay::emit_exp2(&mut kb, log2_gamma);

    kb.comment("state of (slot, h) at (slot*H + h)*K*V");
    let slot = kb.ld(Space::Shared, Ty::U32, Address::reg(staged.slot_addr, 0));
    let slot_h = kb.mad_lo(slot, heads, h);
    let state = kb.global_ptr(&p_state);
    let mut g_state = kb.mad_wide(slot_h, k_dim * v_dim * 4, state); // (K, V) f32 of this (slot, h)
    if let Some(col0) = col0 {
        g_state = element_ptr(&mut kb, g_state, col0, 4);
    }

    let acc = stream_state(&mut kb, spec, &map, &staged, (g_state, gamma));
    reduce_to_o(&mut kb, spec, &map, &staged, (g_o, &acc), &s_part);
    kb.place(done);
    kb.ret();
    kb.finish()
}
