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
//! `[B, H, S−1, K, V]`) and `p_segment_len` (`.u32`, L). Its grid is `(B, H, S·slices)`
//! with `ctaid.z = s·slices + slice` (slices = V / [`super::chunkwise::value_slice`], 1 on
//! tensor cores). [`two_phase_plan`] sizes both launches and the workspace;
//! [`prefer_two_phase`] says when the split pays.

use super::chunk_states;
use super::chunkwise::{self, THREADS};
use super::decay;
use crate::dsl::tiles::AccTileF32;
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, Label, ParamRef, Reg, Rounding, Space, Sreg, Ty,
};
use crate::spec::{KernelOp, KernelSpec};
use crate::{GenError, LaunchGeometry};

/// The shapes both phases are built and proven for: C ∈ {32, 64}; every (K, V) on tensor
/// cores (16-bit: phase 1 splits V into 128-column slices, phase 2 follows the one-pass
/// kernel's V slices and per-warp state slices); in f32, chunks shared memory holds whole
/// (not the blocked FMA path). Longer chunks are refused rather than emitted: the two-phase
/// forward is for few (row, head) pairs and long sequences, where C ≤ 64 already fills the
/// GPU with segments.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the field outside the envelope.
pub fn check_envelope(spec: &KernelSpec) -> Result<(), GenError> {
    let c = spec.chunk.unwrap_or_default();
    if !matches!(c, 32 | 64) {
        return Err(super::unsupported(
            "chunk",
            c,
            "the two-phase forward serves C in {32, 64}",
        ));
    }
    let sixteen_bit = spec.dtype != retention_core::Dtype::F32;
    if !sixteen_bit && chunkwise::fma_tiling(spec).0 < c {
        return Err(super::unsupported(
            "head dims",
            format!("K={} V={} C={c}", spec.k, spec.v),
            "the two-phase FMA path serves chunks that fit shared memory whole",
        ));
    }
    Ok(())
}

/// A phase-2 CTA's segment, as registers the chunkwise generators' hooks use.
pub(crate) struct Segment {
    /// s, the segment index.
    pub index: Reg,
    /// The workspace pointer (global, `.u64`).
    pub states: Reg,
    /// S − 1: local states per (row, head) in the workspace.
    pub stored: Reg,
    /// `p_t` and `p_segment_len`, reread by the epilogue rather than kept live in registers
    /// across the chunk loop (the tensor-core path has none to spare).
    params: (ParamRef, ParamRef),
    /// V-slices per segment.
    slices: u32,
}

/// `ctaid.z`'s V-slice part: `ctaid.z` itself, except for the segmented op where
/// `ctaid.z = segment · slices + slice`.
pub(crate) fn value_slice_index(kb: &mut KernelBuilder, spec: &KernelSpec) -> Reg {
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    if spec.op == KernelOp::ChunkwiseSegmented {
        kb.and(z, slices(spec) - 1)
    } else {
        z
    }
}

/// V-slices per segment of the phase-2 grid.
fn slices(spec: &KernelSpec) -> u32 {
    spec.v / chunkwise::value_slice(spec)
}

/// The segment `ctaid.z >> log2(slices)` of a sequence of `t` tokens starting at `tok0`,
/// `segment_len` tokens each: its first token, its length (0 past the end) and the first
/// token of the segment relative to the sequence.
pub(crate) fn segment_bounds(
    kb: &mut KernelBuilder,
    slices: u32,
    segment_len: Reg,
    tok0: Reg,
    t: Reg,
) -> (Reg, Reg, Reg, Reg) {
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    let s = kb.shr(z, slices.trailing_zeros());
    let rel0 = kb.mul_lo(s, segment_len);
    let past = kb.max(t, rel0);
    let remaining = kb.sub(past, rel0);
    let len = kb.min(remaining, segment_len);
    let start = kb.add(tok0, rel0);
    (s, start, len, rel0)
}

/// (T − 1) div L for T ≥ 1, 0 for T = 0: the full segments before the last one, i.e. the
/// local states phase 1 stores per (row, head).
pub(crate) fn stored_states(kb: &mut KernelBuilder, t: Reg, segment_len: Reg) -> Reg {
    let t1 = kb.max(t, 1u32);
    let before_last = kb.sub(t1, 1u32);
    kb.div(before_last, segment_len)
}

/// For the segmented op: narrow the sequence `(tok0, t)` (from `sequence_bounds`) to this
/// CTA's segment and gather what the prologue and epilogue hooks need; other ops pass
/// through unchanged, with no instruction emitted.
pub(crate) fn segment_of(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    params: Option<&(ParamRef, ParamRef)>,
    p_t: &ParamRef,
    tok0: Reg,
    t: Reg,
) -> (Reg, Reg, Option<Segment>) {
    let Some((p_states, p_segment_len)) = params else {
        return (tok0, t, None);
    };
    kb.comment("this CTA's segment: tokens sL.. of the row, L = p_segment_len");
    let raw_len = kb.ld_param(p_segment_len);
    let segment_len = kb.max(raw_len, 1u32);
    let (index, start, len, _) = segment_bounds(kb, slices(spec), segment_len, tok0, t);
    let states = kb.global_ptr(p_states);
    let stored = stored_states(kb, t, segment_len);
    (
        start,
        len,
        Some(Segment {
            index,
            states,
            stored,
            params: (p_t.clone(), p_segment_len.clone()),
            slices: slices(spec),
        }),
    )
}

impl Segment {
    /// Branch to `done` unless this CTA's segment ends the sequence (only the last segment
    /// writes H_T): sL ≤ T ≤ sL + L, recomputed from the parameters.
    pub(crate) fn skip_unless_last(&self, kb: &mut KernelBuilder, done: Label) {
        let t = kb.ld_param(&self.params.0);
        let raw_len = kb.ld_param(&self.params.1);
        let segment_len = kb.max(raw_len, 1u32);
        let z = kb.sreg(Sreg::Ctaid(Axis::Z));
        let s = kb.shr(z, self.slices.trailing_zeros());
        let rel0 = kb.mul_lo(s, segment_len);
        let past_end = kb.setp(Cmp::Gt, rel0, t);
        kb.bra_if(past_end, false, done);
        let rest = kb.sub(t, rel0);
        let not_last = kb.setp(Cmp::Gt, rest, segment_len);
        kb.bra_if(not_last, false, done);
    }

    /// γ^L = 2^(L·log2 γ), the one decay of the fold: a relative exponent (≤ 0).
    fn fold_decay(&self, kb: &mut KernelBuilder, log2_gamma: Reg) -> Reg {
        kb.comment("gamma^L = 2^(L log2 gamma): the one decay of the fold, a relative exponent");
        let raw_len = kb.ld_param(&self.params.1);
        let segment_len = kb.max(raw_len, 1u32);
        let lf = kb.cvt(Ty::F32, segment_len, Some(Rounding::Rn));
        let x = kb.mul(lf, log2_gamma);
        decay::emit_exp2(kb, x)
    }

    /// The global address of this thread's first element of `Local_0[b,h]`: `elem_bytes`
    /// into the (row, head)'s first workspace state.
    fn first_state(
        &self,
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        bh: Reg,
        elem_bytes: Reg,
    ) -> Reg {
        let first = kb.mul_lo(bh, self.stored);
        let off = kb.mul_wide(first, spec.k * spec.v * 4);
        let at = kb.add(self.states, off);
        kb.add(at, elem_bytes)
    }

    /// FMA path: `R ← γ^L R + Local_s'` for s' < s on the thread's own groups of R in shared
    /// memory (laid out as the chunkwise FMA prologue moves H0: group `t + r·THREADS` at
    /// global `elem_bytes + r·rows_per_round·V·4`). No barrier: each thread folds what it owns.
    pub(crate) fn fold_into_shared(
        &self,
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        log2_gamma: Reg,
        bh: Reg,
        elem_bytes: Reg,
        my_state: Reg,
    ) {
        let vs = chunkwise::value_slice(spec);
        let rows_per_round = THREADS / (vs / 4);
        let rounds = spec.k * vs / 4 / THREADS;
        let global_round = i64::from(rows_per_round * spec.v * 4);
        kb.comment("R <- gamma^L R + Local_s' for every earlier segment s' (Horner)");
        let at = self.first_state(kb, spec, bh, elem_bytes);
        let decay = self.fold_decay(kb, log2_gamma);
        kb.for_range(0u32, self.index, 1, |kb, _| {
            for r in 0..rounds {
                let sh = Address::reg(my_state, i64::from(r * THREADS * 16));
                let old = kb.ld_vec(Space::Shared, Ty::F32, 4, sh.clone());
                let local = kb.ld_vec(
                    Space::Global,
                    Ty::F32,
                    4,
                    Address::reg(at, i64::from(r) * global_round),
                );
                let new: Vec<_> = old
                    .iter()
                    .zip(&local)
                    .map(|(&o, &l)| kb.fma(o, decay, l).into())
                    .collect();
                kb.st_vec(Space::Shared, Ty::F32, sh, &new);
            }
            let next = kb.add(at, u64::from(spec.k * spec.v * 4));
            kb.assign(at, next);
        });
    }

    /// Tensor-core path: `R ← γ^L R + Local_s'` for s' < s on the warp's accumulator slice
    /// (element (16w + g, 2q) of the state at `elem_bytes`, as the H0 prologue loads it).
    pub(crate) fn fold_into_acc(
        &self,
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        log2_gamma: Reg,
        bh: Reg,
        elem_bytes: Reg,
        racc: &AccTileF32,
    ) {
        kb.comment(
            "R_w <- gamma^L R_w + Local_s' rows 16w.. for every earlier segment s' (Horner)",
        );
        let at = self.first_state(kb, spec, bh, elem_bytes);
        let decay = self.fold_decay(kb, log2_gamma);
        kb.for_range(0u32, self.index, 1, |kb, _| {
            for (nt, f) in racc.frags.iter().enumerate() {
                for half in 0..2u32 {
                    let off = i64::from(nt as u32 * 32 + half * 8 * spec.v * 4);
                    let x = kb.ld_vec(Space::Global, Ty::F32, 2, Address::reg(at, off));
                    for e in 0..2 {
                        let i = 2 * half as usize + e;
                        kb.fma_into(f[i], f[i], decay, x[e]);
                    }
                }
            }
            let next = kb.add(at, u64::from(spec.k * spec.v * 4));
            kb.assign(at, next);
        });
    }
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
    if !matches!(
        spec.op,
        KernelOp::ChunkStates | KernelOp::ChunkwiseSegmented
    ) {
        return Err(super::unsupported(
            "op",
            spec.op.name(),
            "a two-phase plan is made for chunk_states or chunkwise_segmented",
        ));
    }
    let states_spec = KernelSpec {
        op: KernelOp::ChunkStates,
        ..*spec
    };
    let segmented_spec = KernelSpec {
        op: KernelOp::ChunkwiseSegmented,
        ..*spec
    };
    let chunk = spec.chunk.unwrap_or_default();
    let one1 = chunk_states::launch_geometry(&states_spec, batch, heads)?;
    let one2 = chunkwise::launch_geometry(&segmented_spec, batch, heads)?;
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
        * spec.k as usize
        * spec.v as usize;
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
        assert!(check_envelope(&long).is_err());
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
