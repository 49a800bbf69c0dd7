//! The chunk kernels' parameter table (see the chunkwise family's module docs): declared once
//! in launch order, so the FMA and tensor-core paths and the segmented phase 2 cannot drift
//! apart, and the token range of a dense or packed (varlen) sequence.

use super::segment_fold::{Segment, segment_of};
use crate::blocks::decay::heads_and_log2_gamma;
use crate::dsl::{Address, KernelBuilder, ParamRef, Reg, Space, Ty};
use crate::spec::{GammaSet, KernelOp, KernelSpec};

/// Parameter names in launch order (see the chunkwise family's module table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let lengths = if spec.op == KernelOp::ChunkwiseVarlen {
        "p_cu_seqlens"
    } else {
        "p_t"
    };
    let mut names = vec![
        "p_q", "p_k", "p_v", "p_o", "p_h0", "p_ht", lengths, "p_scale",
    ];
    if spec.op == KernelOp::ChunkwiseSegmented {
        names.extend(["p_states", "p_segment_len"]);
    }
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// The parameters of both chunkwise paths (FMA and tensor cores), declared once in the
/// launch order of the table above, so the two paths cannot drift apart.
pub struct ChunkwiseParams {
    /// `p_q`.
    pub q: ParamRef,
    /// `p_k`.
    pub k: ParamRef,
    /// `p_v`.
    pub v: ParamRef,
    /// `p_o`.
    pub o: ParamRef,
    /// `p_h0`.
    pub h0: ParamRef,
    /// `p_ht`.
    pub ht: ParamRef,
    /// `p_t` (dense) or `p_cu_seqlens` (varlen).
    pub lengths: ParamRef,
    /// `p_scale`.
    pub scale: ParamRef,
    /// `p_states` and `p_segment_len`, segmented op only.
    pub segments: Option<(ParamRef, ParamRef)>,
    /// `p_heads` and `p_log2_gamma`, runtime-γ only.
    pub runtime: Option<(ParamRef, ParamRef)>,
}

/// Declare [`ChunkwiseParams`] for `spec`; `runtime_gamma` adds the runtime-γ pair.
pub fn declare_params(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    runtime_gamma: bool,
) -> ChunkwiseParams {
    ChunkwiseParams {
        q: kb.param("p_q", Ty::U64),
        k: kb.param("p_k", Ty::U64),
        v: kb.param("p_v", Ty::U64),
        o: kb.param("p_o", Ty::U64),
        h0: kb.param("p_h0", Ty::U64),
        ht: kb.param("p_ht", Ty::U64),
        lengths: declare_lengths(kb, spec),
        scale: kb.param("p_scale", Ty::F32),
        segments: (spec.op == KernelOp::ChunkwiseSegmented).then(|| {
            (
                kb.param("p_states", Ty::U64),
                kb.param("p_segment_len", Ty::U32),
            )
        }),
        runtime: declare_runtime_gamma(kb, runtime_gamma),
    }
}

/// Declare the runtime-γ pair (`p_heads`, `p_log2_gamma`) when `runtime_gamma`; every family
/// with a runtime-γ variant ends its parameter list with it.
pub fn declare_runtime_gamma(
    kb: &mut KernelBuilder,
    runtime_gamma: bool,
) -> Option<(ParamRef, ParamRef)> {
    runtime_gamma.then(|| {
        (
            kb.param("p_heads", Ty::U32),
            kb.param("p_log2_gamma", Ty::U64),
        )
    })
}

/// Declare `p_cu_seqlens` (u64) for a varlen op, `p_t` (u32) otherwise.
pub fn declare_lengths(kb: &mut KernelBuilder, spec: &KernelSpec) -> ParamRef {
    if spec.op.is_varlen() {
        kb.param("p_cu_seqlens", Ty::U64)
    } else {
        kb.param("p_t", Ty::U32)
    }
}

/// The first token of sequence `b` in the flattened token axis and its length: `b·T` and
/// `T` for a dense batch, `cu[b]` and `cu[b+1] − cu[b]` for a packed one.
pub fn sequence_bounds(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    lengths: &ParamRef,
    b: Reg,
) -> (Reg, Reg) {
    if spec.op.is_varlen() {
        let cu = kb.global_ptr(lengths);
        let off = kb.mul_wide(b, 4u32);
        let at = kb.add(cu, off);
        let start = kb.ld(Space::Global, Ty::U32, Address::reg(at, 0));
        let end = kb.ld(Space::Global, Ty::U32, Address::reg(at, 4));
        let len = kb.sub(end, start);
        (start, len)
    } else {
        let t = kb.ld_param(lengths);
        (kb.mul_lo(b, t), t)
    }
}

/// What a chunk kernel's CTA walks: H and log2 γ_h, its tokens `tok0..tok0 + seq_len` (the
/// row's sequence, or its segment for the segmented op), the segment, and the scale s.
pub struct ChunkRows {
    /// H.
    pub heads: Reg,
    /// log2 γ_h.
    pub log2_gamma: Reg,
    /// First token.
    pub tok0: Reg,
    /// Tokens to walk.
    pub seq_len: Reg,
    /// The segmented op's segment (`None` otherwise).
    pub segment: Option<Segment>,
    /// s.
    pub scale: Reg,
}

/// [`ChunkRows`] of the CTA of row `b`, head `h`; `log2_gammas` are a named set's exponents.
pub fn chunk_rows(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    p: &ChunkwiseParams,
    log2_gammas: Option<&[f32]>,
    (b, h): (Reg, Reg),
) -> ChunkRows {
    chunk_rows_of(kb, spec, p, (p.segments.as_ref(), log2_gammas), (b, h))
}

/// [`chunk_rows`] reading the segment parameters `segments` (`None`: the whole sequence,
/// whatever the op).
pub fn chunk_rows_of(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    p: &ChunkwiseParams,
    (segments, log2_gammas): (Option<&(ParamRef, ParamRef)>, Option<&[f32]>),
    (b, h): (Reg, Reg),
) -> ChunkRows {
    let (heads, log2_gamma) = heads_and_log2_gamma(kb, p.runtime.as_ref(), log2_gammas, h);
    let (tok0, seq_len) = sequence_bounds(kb, spec, &p.lengths, b);
    let (tok0, seq_len, segment) = segment_of(kb, spec, segments, &p.lengths, tok0, seq_len);
    let scale = kb.ld_param(&p.scale);
    ChunkRows {
        heads,
        log2_gamma,
        tok0,
        seq_len,
        segment,
        scale,
    }
}

/// Emit `body(tok_c, len)` for each chunk of `c` tokens of the walk over `seq_len` tokens
/// from `tok0`: the chunk's first token and its valid rows (at most `c`; the last chunk may
/// be shorter).
pub fn for_each_chunk(
    kb: &mut KernelBuilder,
    (tok0, seq_len): (Reg, Reg),
    c: u32,
    body: impl FnOnce(&mut KernelBuilder, Reg, Reg),
) {
    kb.for_range(0u32, seq_len, c, |kb, c0| {
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);
        body(kb, tok_c, len);
    });
}
