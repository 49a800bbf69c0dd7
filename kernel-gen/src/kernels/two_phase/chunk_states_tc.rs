//! The tensor-core path of phase 1 ([`super::chunk_states`]; f16/bf16 inputs): the chunkwise
//! tensor-core state update alone, one CTA of K/16 warps per (row b, head h, segment s,
//! [`super::tc_value_slice`] columns of V), warp w holding rows 16w.. of the f32 state in `mma`
//! accumulators:
//!
//! ```text
//! R_w = 0; per chunk of the segment: R_w ← γ^L R_w + (Kᵀ ⊙ ζ)_w V ; Local_s rows 16w.. = R_w
//! ```
//!
//! k and v arrive by `cp.async` into swizzled tiles (rows past a partial chunk zero-filled),
//! and `Kᵀ ⊙ ζ` is split into 16-bit head and tail fragments exactly as the chunkwise
//! kernel does, so the f32 decay is not rounded away.

use super::{TcStatesLayout, open_states_kernel, tc_value_slice, tc_warps};
use crate::GenError;
use crate::blocks::cta::{mma_types, warp_lane};
use crate::blocks::decay::{TableFill, emit_decay_table, table_entry};
use crate::blocks::global::GlobalRows;
use crate::blocks::staging::{ColumnTail, stage_tile_masked};
use crate::dsl::tiles::{AccTileF32, LaneFragments};
use crate::dsl::{Address, Axis, Space, Sreg, Ty};
use crate::math::chunk_params::for_each_chunk;
use crate::math::chunk_tiling::{exact_dims, tile_spec};
use crate::math::state_update::{StateV, accumulate_state_step, zeta_quad};
use crate::spec::KernelSpec;

/// The kernel's title line.
const TITLE: &str = "retention chunk states (two-phase, phase 1, tensor cores)";
/// What the kernel computes, as its header says.
const FORMULA: &str = "per warp: R = 0 ; per chunk R <- g^L R + (K^T . zeta) V ; Local_s = R  (mma, f32 state in registers)";

/// Emit the tensor-core phase 1 for `spec` (validated by the caller).
///
/// # Errors
/// [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    // Tiles and the workspace states are the padded dims (kd, vd); k and v rows keep the
    // real (kg, vg), staged with masked tails.
    let tile = tile_spec(spec);
    let (kd, vd) = (tile.k, tile.v);
    let (kg, vg) = (spec.k, spec.v);
    let tail = !exact_dims(spec);
    let c = spec.chunk.unwrap_or_default();
    let es = spec.dtype.size_bytes() as u32;
    let (ab, pty) = mma_types(spec.dtype);
    let threads = 32 * tc_warps(spec);
    let vs = tc_value_slice(spec); // columns of V this CTA serves
    let slices = vd / vs;
    let lay = TcStatesLayout::new(kd, vs, c);
    let doc = format!(
        "swizzled 16-bit k [C,K] @{}, v [C,V] @{}; f32 gamma^d [C+1] @{}",
        lay.k.offset, lay.v.offset, lay.decay
    );
    let cta = "one CTA per (row b = ctaid.x, head h = ctaid.y, segment s = ctaid.z)";
    let head = (TITLE, FORMULA, threads);
    let (mut kb, open) = open_states_kernel(spec, head, (lay.total, 128, &doc), cta)?;
    let (p, h, t) = (&open.p, open.h, open.t);
    let (lane, warp, g, q4) = warp_lane(&mut kb, t);
    let (heads, log2_gamma, seg) = open.segment(&mut kb, spec, slices);
    let base = kb.shared_addr(&open.smem);

    let fill = TableFill::Rounds {
        t,
        threads,
        reuse_t: false,
    };
    emit_decay_table(&mut kb, fill, (base, lay.decay), c, log2_gamma);

    kb.comment("per-lane ldmatrix rows; warp w owns rows 16w.. of the state, R_w = 0");
    let lanes = LaneFragments::new(&mut kb, lane);
    let zero = kb.mov(Ty::U32, 0u32);
    let i0 = kb.shl(warp, 4u32);
    let k_chunk = kb.shl(warp, 1u32); // 16w / 8: chunk of column 16w in a [C][K] tile
    let k_rows = lay.k.lane_rows(&mut kb, base, zero, lanes.p2_row);
    let v_rows = lay.v.lane_rows(&mut kb, base, zero, lanes.p1_row);
    let racc = AccTileF32::zeros(&mut kb, vs);
    let q2 = kb.shl(q4, 1u32);
    let k = kb.global_ptr(&p.k);
    let v = kb.global_ptr(&p.v);
    // With V split over the grid, this CTA's columns start at vs · (ctaid.z mod slices).
    let v_col0 = (slices > 1).then(|| {
        let z = kb.sreg(Sreg::Ctaid(Axis::Z));
        let slice = kb.and(z, slices - 1);
        kb.mul_lo(slice, vs)
    });
    let v = match v_col0 {
        Some(c0) => {
            let col_bytes = kb.mul_wide(c0, es);
            kb.add(v, col_bytes)
        }
        None => v,
    };
    let tails = tail.then(|| {
        let kt = ColumnTail::new(&mut kb, None, kg);
        let vt = ColumnTail::new(&mut kb, v_col0, vg);
        (kt, vt)
    });

    kb.comment(format!("walk the segment in chunks of {c}"));
    for_each_chunk(&mut kb, (seg.start, seg.len), c, |kb, tok_c, len| {
        kb.comment("cp.async k, v rows of the chunk (rows >= L zero-filled)");
        let (kt, vt) = (tails.map(|t| t.0), tails.map(|t| t.1));
        for (tile, src, cols, tail) in [(lay.k, k, kg, kt), (lay.v, v, vg, vt)] {
            let rows = GlobalRows {
                src,
                row_bytes: cols * es,
                tok_c,
                heads,
                h,
                len,
            };
            stage_tile_masked(kb, tile, base, t, threads, &rows, tail);
        }
        kb.cp_async_commit();
        kb.cp_async_wait(0);
        kb.bar_sync(0);

        kb.comment("R_w <- gamma^L R_w + (K^T . zeta) V, zeta_j = gamma^(L-1-j)");
        let (_, g_len) = table_entry(kb, (base, lay.decay), len);
        racc.scale(kb, g_len);
        // zeta index + C = L + C - 1 - j, j = 16 ks + 2q + e (see `zeta_quad`).
        let z1 = kb.add(len, c - 1);
        let z_base = kb.sub(z1, q2);
        for ks in 0..c / 16 {
            let ka = lay
                .k
                .ldmatrix_x4(kb, pty, true, k_rows, 16 * ks, k_chunk, lanes.p2_x);
            let zeta = zeta_quad(kb, z_base, 16 * ks, c, (base, lay.decay));
            let v = StateV {
                tile: lay.v,
                rows: v_rows,
                row0: 16 * ks,
                lane_x: lanes.p1_x,
                cols: vs,
            };
            accumulate_state_step(kb, &racc, (ka, &zeta), &v, (pty, ab));
        }
        kb.comment("every warp is done reading k and v before the next chunk lands");
        kb.bar_sync(0);
    });

    kb.comment("Local_s[b,h] rows 16w.. = R_w");
    let my_row = kb.add(i0, g);
    let my_col = match v_col0 {
        Some(c0) => kb.add(q2, c0),
        None => q2,
    };
    let my_elem = kb.mad_lo(my_row, vd, my_col);
    let my_elem_bytes = kb.mul_wide(my_elem, 4u32);
    let states = kb.global_ptr(&p.states);
    let at = kb.add(states, seg.state_bytes);
    let at = kb.add(at, my_elem_bytes);
    for (nt, f) in racc.frags.iter().enumerate() {
        for half in 0..2u32 {
            let off = i64::from(nt as u32 * 32 + half * 8 * vd * 4);
            let i = 2 * half as usize;
            kb.st_vec(
                Space::Global,
                Ty::F32,
                Address::reg(at, off),
                &[f[i].into(), f[i + 1].into()],
            );
        }
    }
    kb.ret();
    kb.finish()
}
