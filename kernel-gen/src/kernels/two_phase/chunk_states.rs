//! The FMA path of phase 1 (f32 inputs): 256 threads, the f32 state in shared memory,
//! [`super::value_slice`] columns of V per CTA. Math, parameters and grid: the family's
//! module docs.

use super::{StatesLayout, open_states_kernel, value_slice};
use crate::GenError;
use crate::blocks::decay::window_and_decay_table;
use crate::blocks::shared_state::SharedStateRounds;
use crate::dsl::{Axis, KernelBuilder, Reg, Sreg};
use crate::math::chunk_params::for_each_chunk;
use crate::math::chunk_tiling::{THREADS, tile_spec};
use crate::math::fma_chunk::FmaChunkStaging;
use crate::math::state_update::update_state_fma_chunk;
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention chunk states (two-phase, phase 1)";
/// What the kernel computes, as its header says.
const FORMULA: &str =
    "R = 0 ; per chunk R <- g^L R + K^T (V . zeta) ; Local_s = R  (f32 state on chip)";

/// Emit the FMA phase 1 for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug; [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles and the workspace states are the padded dims (kd, vd); k and v rows keep the
    // real K, V, staged with masked tails (`FmaChunkStaging::for_spec`).
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let vs = value_slice(spec);
    let c = spec.chunk.unwrap_or_default();
    let lay = StatesLayout::new(kd, vs, c);
    let doc = format!(
        "f32 R [K,Vs] @{}, K^T [K,C] @{}, V [C,Vs] @{}, gamma^d [C+1] @{}",
        lay.r, lay.kt, lay.v, lay.decay
    );
    let cta = "one CTA per (row b = ctaid.x, head h = ctaid.y, segment and V-slice ctaid.z)";
    let head = (TITLE, FORMULA, THREADS);
    let (mut kb, open) = open_states_kernel(spec, head, (lay.total, 16, &doc), cta)?;
    let (p, t) = (&open.p, open.t);
    let slices = vd / vs;
    let (heads, log2_gamma, seg) = open.segment(&mut kb, spec, slices);
    let window = (&open.smem, t);
    let (base, t16) = window_and_decay_table(&mut kb, window, (lay.decay, c), log2_gamma);

    kb.comment(format!(
        "R = 0; this CTA serves V columns {vs}z'.. (z' = ctaid.z mod {slices})"
    ));
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let slice = kb.and(z, slices - 1);
    let v_col0 = kb.mul_lo(slice, vs);
    let state = SharedStateRounds::new(&mut kb, t, v_col0, (kd, vs, vd), THREADS);
    let my_state = kb.add(base, t16); // R as [K*vs/4] groups of 4, group t first
    state.zero(&mut kb, my_state, i64::from(lay.r));
    kb.bar_sync(0);

    let params = [&p.k, &p.v];
    let (cta_regs, cols) = ((t, base, heads, open.h), (vs, c, v_col0));
    let staging = FmaChunkStaging::for_spec(&mut kb, spec, cta_regs, cols, (false, &params));
    let (k, v) = (staging.ptrs[0], staging.ptrs[1]);

    kb.comment(format!("walk the segment in chunks of {c}"));
    for_each_chunk(&mut kb, (seg.start, seg.len), c, |kb, tok_c, len| {
        kb.comment("stage k^T and v of rows < L as f32");
        staging.stage_kt(kb, (k, tok_c, len), lay.kt, None);
        staging.stage_v(kb, (v, tok_c, len), lay.v);
        kb.bar_sync(0);

        kb.comment("R <- gamma^L R + sum_{j<L} gamma^(L-1-j) k_j^T v_j");
        update_state(kb, &lay, base, t, (kd, vs, c), len);
        kb.bar_sync(0);
    });

    kb.comment("Local_s[b,h] = R");
    let states = kb.global_ptr(&p.states);
    let at = kb.add(states, seg.state_bytes);
    let at = kb.add(at, state.elem_bytes);
    state.store(&mut kb, (my_state, i64::from(lay.r)), at, None);
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
    let tiles = (Some(lay.r), lay.kt, lay.v, lay.decay);
    update_state_fma_chunk(kb, (t, THREADS), tiles, (kd, vs, c), (base, len));
}
