//! The two-phase chunkwise forward, for few (row, head) pairs and long sequences: the
//! sequence is cut into S segments of L tokens (L a multiple of the chunk C, a launch
//! parameter; the last segment may be shorter), so that B·H·S CTAs fill the GPU where the
//! one-CTA-per-(b, h) chunkwise kernel leaves it idle.
//!
//! ```text
//! phase 1 (chunk_states, kernels::chunk_states), CTA (b, h, s < S−1):
//!     Local_s = Σ_{m in segment s} γ^(end_s − 1 − m) k_mᵀ v_m      (from zero, f32)
//! phase 2 (chunkwise_segmented, this file + the chunkwise generators), CTA (b, h, s < S):
//!     R = H0 (or 0); for s' < s: R ← γ^L R + Local_s'              (= γ^(Ls) H0 + Σ γ^(L(s−1−s')) Local_s')
//!     the chunk loop of `chunkwise` over segment s, writing o
//!     H_T = R after the last segment (when asked for)
//! ```
//!
//! The fold is Horner's rule on the one decay γ^L = 2^(L·log2 γ) — a relative exponent
//! (≤ 0), computed once per CTA, so nothing overflows and the f32 state is never narrowed.
//!
//! Phase 2 takes the chunkwise parameter table (see [`super::chunkwise`]) with two more
//! before the runtime-γ pair: `p_states` (`.u64`, the workspace phase 1 wrote, f32
//! `[B, H, S−1, K, V]`; K, V padded for dims outside the catalog — see below) and
//! `p_segment_len` (`.u32`, L). Its grid is `(B, H, S·slices)`
//! with `ctaid.z = s·slices + slice` (slices = V / [`crate::math::chunk_tiling::value_slice`], 1 on
//! tensor cores). [`two_phase_plan`] sizes both launches and the workspace;
//! [`prefer_two_phase`] says when the split pays.
//!
//! Head dims: any 1 ≤ K ≤ 256, 1 ≤ V ≤ 512, on padded tiles with masked tails as the
//! chunkwise family describes. The workspace holds states of the padded dims
//! (`segment_fold::state_elems`; zero past the real K, V), so phase 1 stores and phase 2
//! folds whole tiles without masks; only q, k, v, o, H0 and H_T use the real dims.
//!
//! ## Phase 1
//!
//! One CTA per
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
//! ([`chunk_states_tc`], K/16 warps, one 16-row state slice each, at most 128
//! columns of V per CTA);
//! everything else runs the FMA path ([`chunk_states`] (256 threads, f32 state in shared memory,
//! [`value_slice`] columns of V per CTA). Numerics as the chunkwise family's.

pub mod chunk_states;
pub mod chunk_states_tc;

use crate::blocks::cta::cta_row_head_thread;
use crate::blocks::decay::heads_and_log2_gamma;
use crate::dsl::tiles::SharedTile16;
use crate::dsl::{KernelBuilder, ParamRef, Reg, SharedRef, Ty};
use crate::math::chunk_params::declare_runtime_gamma;
use crate::math::chunk_tiling::{self, THREADS, tile_spec, uses_tensor_cores};
use crate::math::kernel_head;
use crate::math::segment_fold::{self, segment_bounds, stored_states};
use crate::math::shared_window::{decay_table_bytes, f32_arrays, tiles16, widest_slice};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelOp, KernelSpec};
use crate::{GenError, GenResult, LaunchGeometry};

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
        let ([r, kt, v], decay) = f32_arrays(0, [k * vs, k * c, c * vs]);
        StatesLayout {
            r,
            kt,
            v,
            decay,
            total: decay + decay_table_bytes(c),
        }
    }
}

/// Check that phase 1 serves `spec`: the `chunk_states` op on a shape the chunkwise
/// forward serves (phase 2 must serve it too).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for another op, or a shape the chunk tiling does not serve.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    spec.check_op(
        &[KernelOp::ChunkStates],
        "the chunk-states generator emits chunk_states only",
    )?;
    segment_fold::check_envelope(spec)?;
    chunk_tiling::check_shape(spec)
}

/// Columns of V one FMA-path CTA serves: all of V when its tiles fit the arch's shared
/// memory, else the widest halving (down to 64) that fits; on tensor cores
/// [`tc_value_slice`].
pub fn value_slice(spec: &KernelSpec) -> u32 {
    if uses_tensor_cores(spec) {
        return tc_value_slice(spec);
    }
    let spec = &tile_spec(spec);
    let c = spec.chunk.unwrap_or_default();
    let limit = spec.arch.max_dynamic_shared();
    widest_slice(spec.v, 64, limit, |vs| {
        StatesLayout::new(spec.k, vs, c).total
    })
}

/// The launch for ONE segment per (row, head): grid `(rows, heads, V / value_slice)`;
/// [`two_phase_plan`] multiplies z by S − 1.
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for a bad grid.
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    spec.check_grid(rows, heads)?;
    let c = spec.chunk.unwrap_or_default();
    let (threads, smem) = if uses_tensor_cores(spec) {
        (
            32 * tc_warps(spec),
            TcStatesLayout::new(tile_spec(spec).k, value_slice(spec), c).total,
        )
    } else {
        (
            THREADS,
            StatesLayout::new(tile_spec(spec).k, value_slice(spec), c).total,
        )
    };
    Ok(LaunchGeometry {
        grid: [rows, heads, tile_spec(spec).v / value_slice(spec)],
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
pub struct StatesParams {
    /// `p_k`.
    pub k: ParamRef,
    /// `p_v`.
    pub v: ParamRef,
    /// `p_states`.
    pub states: ParamRef,
    /// `p_t`.
    pub t: ParamRef,
    /// `p_segment_len`.
    pub segment_len: ParamRef,
    /// `p_heads` and `p_log2_gamma`, runtime-γ only.
    pub runtime: Option<(ParamRef, ParamRef)>,
}

/// Declare [`StatesParams`]; `runtime_gamma` adds the runtime-γ pair.
pub fn declare_params(kb: &mut KernelBuilder, runtime_gamma: bool) -> StatesParams {
    StatesParams {
        k: kb.param("p_k", Ty::U64),
        v: kb.param("p_v", Ty::U64),
        states: kb.param("p_states", Ty::U64),
        t: kb.param("p_t", Ty::U32),
        segment_len: kb.param("p_segment_len", Ty::U32),
        runtime: declare_runtime_gamma(kb, runtime_gamma),
    }
}

/// What both phase-1 paths open with, after the builder: the parameters, the dynamic
/// shared window and the CTA's coordinates.
pub struct StatesOpening {
    /// The parameters.
    pub p: StatesParams,
    /// The dynamic shared window.
    pub smem: SharedRef,
    /// log2 γ_h of a named gamma set; `None` for runtime γ.
    pub log2_gammas: Option<Vec<f32>>,
    /// Row b (`ctaid.x`), head h (`ctaid.y`) and the thread (`tid.x`).
    pub b: Reg,
    /// Head h.
    pub h: Reg,
    /// The thread.
    pub t: Reg,
}

/// Open a phase-1 kernel for `spec`: `head`'s title, formula and threads, the parameters and
/// the dynamic shared `window` ([`kernel_head::open_kernel`]), then the CTA's coordinates
/// under the comment `cta`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for a bad gamma set.
pub fn open_states_kernel(
    spec: &KernelSpec,
    head: (&str, &str, u32),
    window: (u32, u32, &str),
    cta: &str,
) -> GenResult<(KernelBuilder, StatesOpening)> {
    let opened = kernel_head::open_kernel(spec, head, window, declare_params)?;
    let mut kb = opened.kb;
    kb.comment(cta);
    let (b, h, t) = cta_row_head_thread(&mut kb);
    let opening = StatesOpening {
        p: opened.params,
        smem: opened.smem,
        log2_gammas: opened.log2_gammas,
        b,
        h,
        t,
    };
    Ok((kb, opening))
}

impl StatesOpening {
    /// (H, log2 γ_h) of the CTA's head, and its segment (`slices` V-slices per segment).
    pub fn segment(
        &self,
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        slices: u32,
    ) -> (Reg, Reg, StatesSegment) {
        let named = self.log2_gammas.as_deref();
        let (heads, log2_gamma) = heads_and_log2_gamma(kb, self.p.runtime.as_ref(), named, self.h);
        let seg = states_segment(kb, spec, &self.p, slices, (self.b, self.h, heads));
        (heads, log2_gamma, seg)
    }
}

/// The segment a phase-1 CTA owns and where its local state goes: (first token, length,
/// byte offset of `Local_s[b,h]` in the workspace).
pub struct StatesSegment {
    /// First token of the segment.
    pub start: Reg,
    /// Its length (0 past the end).
    pub len: Reg,
    /// Byte offset of `Local_s[b,h]` in the workspace.
    pub state_bytes: Reg,
}

/// Locate CTA `(b, h, ctaid.z)`'s segment (`slices` V-slices per segment).
pub fn states_segment(
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
    // The workspace holds states of the padded dims (zero past the real K, V).
    let tile = tile_spec(spec);
    let state_bytes = kb.mul_wide(bhs, tile.k * tile.v * 4);
    StatesSegment {
        start,
        len,
        state_bytes,
    }
}

/// Warps per CTA: one 16-row slice of the state each.
pub fn tc_warps(spec: &KernelSpec) -> u32 {
    tile_spec(spec).k / 16
}

/// Columns of V (and of the state) one CTA serves: at most 128 (a warp's 16-row state slice
/// in 64 registers), 64 for K = 256, whose 16 warps leave a thread at most 128 registers.
/// The grid's z axis walks segment · slices + slice.
pub fn tc_value_slice(spec: &KernelSpec) -> u32 {
    let spec = &tile_spec(spec);
    if spec.k == 256 {
        spec.v.min(64)
    } else {
        spec.v.min(128)
    }
}

/// Shared tiles of the tensor-core phase 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcStatesLayout {
    /// k `[C][K]`.
    pub k: SharedTile16,
    /// v `[C][V]`.
    pub v: SharedTile16,
    /// γ^d, d = 0..=C, f32.
    pub decay: u32,
    /// Total bytes.
    pub total: u32,
}

impl TcStatesLayout {
    /// The layout for head dims `k`, `v` and chunk `c`.
    pub const fn new(k: u32, v: u32, c: u32) -> Self {
        let ([k, v], decay) = tiles16(0, [(c, k), (c, v)]);
        TcStatesLayout {
            k,
            v,
            decay,
            total: decay + decay_table_bytes(c),
        }
    }
}

/// The plan of ONE segment per (row, head) of phase 1; [`two_phase_plan`] sizes the whole
/// launch and the states workspace (which depends on the segment length).
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let geometry = launch_geometry(spec, size.rows, size.heads)?;
    let path = KernelPath::tensor_cores_or_fma(uses_tensor_cores(spec));
    let (vs, params) = (value_slice(spec), param_names(spec));
    Ok(KernelPlan::new(spec, path, vs, geometry, params))
}

/// Emit phase 1 for `spec` (validated first): tensor cores for 16-bit inputs, FMA for f32.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    if uses_tensor_cores(spec) {
        return chunk_states_tc::generate(spec);
    }
    chunk_states::generate(spec)
}

/// Both launches of a two-phase chunkwise forward and the workspace between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoPhasePlan {
    /// Phase 1: the `chunk_states` spec.
    pub states_spec: KernelSpec,
    /// Phase 2: the `chunkwise_segmented` spec.
    pub segmented_spec: KernelSpec,
    /// L, tokens per segment (a multiple of the chunk); pass as `p_segment_len` to both.
    pub segment_len: u32,
    /// S = max(1, ⌈T / L⌉).
    pub segments: u32,
    /// Phase 1's launch, `None` when S = 1 (nothing to precompute: phase 2 alone is the
    /// plain chunkwise forward).
    pub phase1: Option<LaunchGeometry>,
    /// Phase 2's launch.
    pub phase2: LaunchGeometry,
    /// f32 elements of the workspace `[B, H, S − 1, K, V]` (0 when S = 1; then pass any
    /// pointer, e.g. 0, as `p_states`).
    pub workspace_elems: usize,
}

/// Plan a two-phase launch of `spec` (either phase's op; the other is derived) over
/// `batch` rows, `heads` heads and `t` tokens, cut into segments of `segment_len` tokens.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for an op other than the two phases or a spec either phase
/// cannot serve; [`GenError::Launch`] when `segment_len` is 0 or not a multiple of the
/// chunk, or a grid exceeds the CUDA limits (z ≤ 65535).
pub fn two_phase_plan(
    spec: &KernelSpec,
    batch: u32,
    heads: u32,
    t: u32,
    segment_len: u32,
) -> Result<TwoPhasePlan, GenError> {
    spec.check_op(
        &[KernelOp::ChunkStates, KernelOp::ChunkwiseSegmented],
        "a two-phase plan is made for chunk_states or chunkwise_segmented",
    )?;
    let states_spec = KernelSpec {
        op: KernelOp::ChunkStates,
        ..*spec
    };
    let segmented_spec = KernelSpec {
        op: KernelOp::ChunkwiseSegmented,
        ..*spec
    };
    let chunk = spec.chunk.unwrap_or_default();
    let one1 = launch_geometry(&states_spec, batch, heads)?;
    let one2 = chunk_tiling::launch_geometry(&segmented_spec, batch, heads)?;
    if segment_len == 0 || chunk == 0 || !segment_len.is_multiple_of(chunk) {
        return Err(GenError::Launch(format!(
            "segment length {segment_len} must be a positive multiple of the chunk {chunk}"
        )));
    }
    let segments = t.div_ceil(segment_len).max(1);
    let z2 = u64::from(segments) * u64::from(one2.grid[2]);
    let z1 = u64::from(segments - 1) * u64::from(one1.grid[2]);
    if z2 > 65535 || z1 > 65535 {
        return Err(GenError::Launch(format!(
            "{segments} segments of {segment_len} tokens exceed the CUDA grid's z limit; \
             use longer segments"
        )));
    }
    let phase1 = (segments > 1).then(|| LaunchGeometry {
        grid: [one1.grid[0], one1.grid[1], z1 as u32],
        ..one1
    });
    let phase2 = LaunchGeometry {
        grid: [one2.grid[0], one2.grid[1], z2 as u32],
        ..one2
    };
    let workspace_elems = batch as usize
        * heads as usize
        * (segments as usize - 1)
        * tile_spec(spec).k as usize
        * tile_spec(spec).v as usize;
    Ok(TwoPhasePlan {
        states_spec,
        segmented_spec,
        segment_len,
        segments,
        phase1,
        phase2,
        workspace_elems,
    })
}

/// The segment length L to run the two-phase forward with, or `None` when the one-pass
/// chunkwise kernel already keeps the GPU busy (B·H > SM count / 2) or the sequence is too
/// short to split. `heads` counts the one-pass kernel's CTAs per row: H times its V-slices.
/// (On an H100, 132 SMs, K = 256, V = 512, T = 16384, C = 64, bf16: with 64 one-pass CTAs
/// the split took 1.03 ms against 1.23 ms one-pass; with 128 it took 1.77 ms against 1.29.)
///
/// Rule: aim for B·H·S ≈ 2 × `sm_count` CTAs, with L a multiple of `chunk` and
/// L ≥ max(4·C, √(T·C)). The second bound keeps phase 2's fold cheap: a CTA of segment s
/// reads s earlier states (each K·V f32, about what one chunk's q, k, v weigh), so S ≤ L/C
/// keeps that at most one extra state read per chunk the CTA walks.
pub fn prefer_two_phase(batch: u32, heads: u32, t: u32, chunk: u32, sm_count: u32) -> Option<u32> {
    let pairs = u64::from(batch) * u64::from(heads);
    if chunk == 0 || pairs == 0 || 2 * pairs > u64::from(sm_count) {
        return None;
    }
    let target = (2 * u64::from(sm_count)).div_ceil(pairs);
    let even = u64::from(t).div_ceil(target);
    let fold_floor = (u64::from(t) * u64::from(chunk)).isqrt();
    let floor = (4 * u64::from(chunk)).max(fold_floor);
    let len = even.max(floor).next_multiple_of(u64::from(chunk));
    let segments = u64::from(t).div_ceil(len);
    if segments < 2 {
        return None;
    }
    // Keep both grids within CUDA's z limit (V-slices multiply it, at most 8).
    let len = len.max(
        u64::from(t)
            .div_ceil(8191)
            .next_multiple_of(u64::from(chunk)),
    );
    u32::try_from(len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, GammaSet};
    use retention_core::Dtype;

    fn spec() -> KernelSpec {
        KernelSpec::chunkwise_segmented(64, 64, 32, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80)
    }

    #[test]
    fn plan_sizes_both_grids_and_the_workspace() {
        let p = two_phase_plan(&spec(), 2, 3, 1000, 256).unwrap();
        assert_eq!(p.segments, 4);
        assert_eq!(p.phase1.unwrap().grid, [2, 3, 3]);
        assert_eq!(p.phase2.grid, [2, 3, 4]);
        assert_eq!(p.workspace_elems, 2 * 3 * 3 * 64 * 64);
        let one = two_phase_plan(&spec(), 1, 1, 0, 256).unwrap();
        assert_eq!(
            (one.segments, one.phase1, one.workspace_elems),
            (1, None, 0)
        );
    }

    #[test]
    fn paper_heads_split_v_in_both_phases() {
        // K = 256, V = 512 (6.7B) in bf16: phase 1 serves 64 columns of V per CTA, phase 2
        // follows the one-pass kernel's 64-column slices; both grids walk segment · 8 + slice.
        let paper = KernelSpec::chunkwise_segmented(
            256,
            512,
            64,
            GammaSet::Runtime,
            Dtype::Bf16,
            Arch::Sm80,
        );
        assert!(paper.validate().is_ok());
        let p = two_phase_plan(&paper, 1, 16, 4096, 1024).unwrap();
        assert_eq!(p.segments, 4);
        assert_eq!(p.phase1.unwrap().grid, [1, 16, 3 * 8]);
        assert_eq!(p.phase1.unwrap().block, [16 * 32, 1, 1]);
        assert_eq!(p.phase2.grid, [1, 16, 4 * 8]);
        assert_eq!(p.workspace_elems, 16 * 3 * 256 * 512);
        // Longer chunks stay one-pass.
        let long = KernelSpec {
            chunk: Some(128),
            ..paper
        };
        assert!(segment_fold::check_envelope(&long).is_err());
    }

    #[test]
    fn bad_segment_lengths_are_launch_errors() {
        for len in [0, 48, 100] {
            assert!(matches!(
                two_phase_plan(&spec(), 1, 1, 1000, len),
                Err(GenError::Launch(_))
            ));
        }
        let plain = KernelSpec {
            op: KernelOp::Chunkwise,
            ..spec()
        };
        assert!(two_phase_plan(&plain, 1, 1, 1000, 256).is_err());
    }

    #[test]
    fn heuristic_splits_only_when_the_gpu_would_idle() {
        assert_eq!(prefer_two_phase(8, 32, 65536, 64, 132), None);
        assert_eq!(prefer_two_phase(1, 1, 100, 64, 132), None);
        // 16 heads × 8 V-slices already occupy 128 of 132 SMs; 8 × 8 leave half idle.
        assert_eq!(prefer_two_phase(1, 16 * 8, 16384, 64, 132), None);
        assert!(prefer_two_phase(1, 8 * 8, 16384, 64, 132).is_some());
        let l = prefer_two_phase(1, 8, 32768, 64, 132).unwrap();
        assert_eq!(l % 64, 0);
        assert!(l >= 4 * 64 && u64::from(l) * u64::from(l) >= 32768 * 64);
        let s = 32768u32.div_ceil(l);
        assert!(s >= 2 && s <= l / 64, "S = {s}, L = {l}");
    }
}
