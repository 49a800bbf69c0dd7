//! The segment fold of the two-phase chunkwise forward (see the two-phase family): phase 2's
//! CTA of segment s starts from R = γ^(Ls) H0 + Σ_{s'<s} γ^(L(s−1−s')) Local_s', folded by
//! Horner's rule on the one decay γ^L = 2^(L·log2 γ) — a relative exponent (≤ 0), computed
//! once per CTA, so nothing overflows and the f32 state is never narrowed. Also the segment
//! bounds both phases derive from `ctaid.z` and the envelope both are built for.

use super::chunk_tiling::{
    THREADS, check_dims, fma_tiling, tile_spec, uses_tensor_cores, value_slice,
};
use crate::GenError;
use crate::blocks::decay;
use crate::dsl::tiles::AccTileF32;
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, Label, ParamRef, Reg, Rounding, Space, Sreg, Ty,
};
use crate::error::unsupported;
use crate::spec::{KernelOp, KernelSpec};

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
    check_dims(spec)?;
    let c = spec.chunk.unwrap_or_default();
    if !matches!(c, 32 | 64) {
        return Err(unsupported(
            "chunk",
            c,
            "the two-phase forward serves C in {32, 64}",
        ));
    }
    // Every FMA spec, f32 or 16-bit (odd 16-bit dims run there too), must stage whole chunks:
    // the blocked FMA path walks the whole sequence and ignores the segment parameters, so
    // each segment's CTA would redo (and rewrite) every segment.
    if !uses_tensor_cores(spec) && fma_tiling(spec).0 < c {
        return Err(unsupported(
            "head dims",
            format!("K={} V={} C={c}", spec.k, spec.v),
            "the two-phase FMA path serves chunks that fit shared memory whole",
        ));
    }
    Ok(())
}

/// Elements of one workspace state: the padded K × V ([`tile_spec`]), so phase 1 stores and
/// phase 2 folds whole tiles without masks (the padded rows and columns hold zeros).
pub fn state_elems(spec: &KernelSpec) -> u32 {
    let tile = tile_spec(spec);
    tile.k * tile.v
}

/// A phase-2 CTA's segment, as registers the chunkwise generators' hooks use.
pub struct Segment {
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
pub fn value_slice_index(kb: &mut KernelBuilder, spec: &KernelSpec) -> Reg {
    let z = kb.sreg(Sreg::Ctaid(Axis::Z));
    if spec.op == KernelOp::ChunkwiseSegmented {
        kb.and(z, slices(spec) - 1)
    } else {
        z
    }
}

/// V-slices per segment of the phase-2 grid.
fn slices(spec: &KernelSpec) -> u32 {
    tile_spec(spec).v / value_slice(spec)
}

/// The segment `ctaid.z >> log2(slices)` of a sequence of `t` tokens starting at `tok0`,
/// `segment_len` tokens each: its first token, its length (0 past the end) and the first
/// token of the segment relative to the sequence.
pub fn segment_bounds(
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
pub fn stored_states(kb: &mut KernelBuilder, t: Reg, segment_len: Reg) -> Reg {
    let t1 = kb.max(t, 1u32);
    let before_last = kb.sub(t1, 1u32);
    kb.div(before_last, segment_len)
}

/// For the segmented op: narrow the sequence `(tok0, t)` (from `sequence_bounds`) to this
/// CTA's segment and gather what the prologue and epilogue hooks need; other ops pass
/// through unchanged, with no instruction emitted.
pub fn segment_of(
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
    pub fn skip_unless_last(&self, kb: &mut KernelBuilder, done: Label) {
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
        let off = kb.mul_wide(first, state_elems(spec) * 4);
        let at = kb.add(self.states, off);
        kb.add(at, elem_bytes)
    }

    /// `R ← γ^L R + Local_s'` for every earlier segment s' < s (Horner), on the state `into`
    /// holds; the thread's first element of a state lies `elem_bytes` into the (row, head)
    /// `bh`'s first workspace state, as the H0 prologue of `into`'s path loads it.
    pub fn fold(
        &self,
        kb: &mut KernelBuilder,
        spec: &KernelSpec,
        log2_gamma: Reg,
        (bh, elem_bytes): (Reg, Reg),
        into: FoldInto<'_>,
    ) {
        kb.comment(match into {
            FoldInto::Shared(_) => {
                "R <- gamma^L R + Local_s' for every earlier segment s' (Horner)"
            }
            FoldInto::Acc(_) => {
                "R_w <- gamma^L R_w + Local_s' rows 16w.. for every earlier segment s' (Horner)"
            }
        });
        let at = self.first_state(kb, spec, bh, elem_bytes);
        let decay = self.fold_decay(kb, log2_gamma);
        kb.for_range(0u32, self.index, 1, |kb, _| {
            match into {
                FoldInto::Shared(my_state) => fold_shared_state(kb, spec, (at, decay), my_state),
                FoldInto::Acc(racc) => fold_acc_state(kb, spec, (at, decay), racc),
            }
            let next = kb.add(at, u64::from(state_elems(spec) * 4));
            kb.assign(at, next);
        });
    }
}

/// Where the state a segment folds into lives.
#[derive(Clone, Copy)]
pub enum FoldInto<'a> {
    /// FMA path: the thread's own groups of R in shared memory from this address (laid out
    /// as the chunkwise FMA prologue moves H0: group `t + r·THREADS` at global
    /// `elem_bytes + r·rows_per_round·V·4`). No barrier: each thread folds what it owns.
    Shared(Reg),
    /// Tensor-core path: the warp's accumulator slice (element (16w + g, 2q) of the state at
    /// `elem_bytes`).
    Acc(&'a AccTileF32),
}

/// One Horner step on the thread's groups of R in shared memory at `my_state`: R ← γ^L R +
/// the state at `at`.
fn fold_shared_state(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    (at, decay): (Reg, Reg),
    my_state: Reg,
) {
    let vs = value_slice(spec);
    let rows_per_round = THREADS / (vs / 4);
    let tile = tile_spec(spec);
    let rounds = tile.k * vs / 4 / THREADS;
    let global_round = i64::from(rows_per_round * tile.v * 4);
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
}

/// One Horner step on the warp's accumulator slice `racc`: R_w ← γ^L R_w + the state at `at`.
fn fold_acc_state(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    (at, decay): (Reg, Reg),
    racc: &AccTileF32,
) {
    for (nt, f) in racc.frags.iter().enumerate() {
        for half in 0..2u32 {
            let off = i64::from(nt as u32 * 32 + half * 8 * tile_spec(spec).v * 4);
            let x = kb.ld_vec(Space::Global, Ty::F32, 2, Address::reg(at, off));
            for e in 0..2 {
                let i = 2 * half as usize + e;
                kb.fma_into(f[i], f[i], decay, x[e]);
            }
        }
    }
}
