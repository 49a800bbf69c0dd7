//! The chunkwise retention forward (DESIGN §1, chunkwise form), one CTA per (row b, head h)
//! walking the sequence in chunks of C with the state R (K×V, f32) kept in shared memory
//! across chunks — one pass over q, k, v, no per-chunk state in global memory:
//!
//! ```text
//! R = H0[b,h] (or 0)
//! for each chunk [c0, c0+L), L = min(C, T − c0):
//!     S  = (s·Q) Kᵀ ⊙ D,            D[i][j] = γ^(i−j) for i ≥ j, else 0
//!     O  = ((s·Q) R) ⊙ ξ + S V,     ξ_i = γ^(i+1)            (rows i < L written)
//!     R ← γ^L R + Kᵀ (V ⊙ ζ),       ζ_j = γ^(L−1−j)          (j < L)
//! H_T[b,h] = R (when asked for)
//! ```
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses):
//!
//! | # | name           | type   | meaning                                               |
//! |---|----------------|--------|-------------------------------------------------------|
//! | 0 | `p_q`          | `.u64` | q `[B,T,H,K]` in the spec's dtype                     |
//! | 1 | `p_k`          | `.u64` | k `[B,T,H,K]` in dtype                                |
//! | 2 | `p_v`          | `.u64` | v `[B,T,H,V]` in dtype                                |
//! | 3 | `p_o`          | `.u64` | o `[B,T,H,V]` in dtype (written)                      |
//! | 4 | `p_h0`         | `.u64` | initial state `[B,H,K,V]` f32, or 0 for none           |
//! | 5 | `p_ht`         | `.u64` | final state `[B,H,K,V]` f32 (written), or 0 for none   |
//! | 6 | `p_t`          | `.u32` | T, tokens per row (0 is allowed: H_T = H0)            |
//! | 6 | `p_cu_seqlens` | `.u64` | varlen only, instead of `p_t`: u32 `[N+1]` bounds     |
//! | 7 | `p_scale`      | `.f32` | s, applied to q exactly once                          |
//! | 8 | `p_heads`      | `.u32` | H — runtime-γ variant only                            |
//! | 9 | `p_log2_gamma` | `.u64` | log2 γ_h, f32 `[H]` — runtime-γ variant only          |
//!
//! The segmented op (`chunkwise_segmented`, phase 2 of [`super::chunkwise_two_phase`]) adds
//! `p_states` (`.u64`, f32 `[B,H,S−1,K,V]` from phase 1) and `p_segment_len` (`.u32`, L)
//! after `p_scale`, before the runtime-γ pair, and runs CTA (b, h, z) over one segment.
//!
//! The varlen op (`chunkwise_varlen`) reads packed q, k `[1,ΣT,H,K]`, v, o `[1,ΣT,H,V]`,
//! states `[N,H,K,V]`, and runs CTA (n, h) over tokens `cu[n]..cu[n+1]` (grid `(N, H, 1)`);
//! chunks restart at every sequence boundary.
//!
//! Three paths share this parameter table and grid `(B, H, V / value_slice)` (grid z walks
//! slices of V's columns; 1 when a CTA serves all of V): f16/bf16 run on tensor cores
//! ([`chunkwise_tc`], every (K, V, C); C = 256 with K ≥ 128, and C = 128 with K = 256 on
//! sm_80, stream their k and v blocks through shared memory, [`chunkwise_tc_streamed`]),
//! `32·min(max(C, K)/16, 8)` threads, f32 state in `mma` accumulators, at most 128 columns
//! of V per CTA; f32 runs the FMA path below
//! (256 threads, f32 state in shared memory), which walks chunks longer than shared memory
//! holds whole in blocks ([`chunkwise_fma_blocked`]: C ≥ 128, and C = 64 with K = 256 on
//! sm_80). [`launch_geometry`] gives the block and the dynamic shared memory (over 48 KiB on
//! the FMA path: the runtime must raise the kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES`
//! attribute before launching).
//!
//! Numerics (FMA path): every product accumulates in f32; q, k, v are widened to f32 as they
//! are staged. Decays come from one table `γ^d, d = 0..=C`,
//! computed once per CTA as 2^(d·log2 γ_h) by [`decay::emit_exp2`] — relative exponents only,
//! all ≤ 0, so nothing overflows and far terms underflow to 0. The causal mask is a `selp`,
//! never a multiplication, so stale shared rows past a partial chunk cannot leak NaN; the
//! inner loops that read V or K rows run to L, not C.

use retention_core::Dtype;

use super::chunkwise_fma::{
    StagedChunk, accumulate_decayed_outer, accumulate_shared, for_each_piece, load_piece,
    store_piece, zero_acc,
};
#[cfg(doc)]
use super::chunkwise_tc_streamed;
use super::chunkwise_two_phase as two_phase;
use super::{chunkwise_fma_blocked, chunkwise_tc, decay, unsupported};
use crate::dsl::{
    Address, Axis, Cmp, KernelBuilder, Operand, ParamRef, Reg, Rounding, Space, Sreg, Ty,
};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{Arch, GenError, LaunchGeometry};

/// Head dims K served.
pub const SUPPORTED_K: [u32; 3] = [64, 128, 256];
/// Head dims V served.
pub const SUPPORTED_V: [u32; 4] = [64, 128, 256, 512];
/// Chunk lengths served.
pub const SUPPORTED_CHUNKS: [u32; 4] = [32, 64, 128, 256];
/// Longest chunk the FMA path stages whole; longer ones walk it in blocks
/// ([`chunkwise_fma_blocked`]).
pub const FMA_WHOLE_CHUNK: u32 = 64;
/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Most dynamic shared memory one CTA may opt into.
pub const fn max_dynamic_shared(arch: Arch) -> u32 {
    match arch {
        Arch::Sm80 => 163 * 1024,
        Arch::Sm90 => 227 * 1024,
    }
}

/// Byte offsets of the f32 arrays in the dynamic shared window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedLayout {
    /// R `[K][V]`: the state.
    pub r: u32,
    /// (s·Q)ᵀ `[K][C]`.
    pub qt: u32,
    /// Kᵀ `[K][C]`.
    pub kt: u32,
    /// V `[C][V]`.
    pub v: u32,
    /// Sᵀ `[C][C]`: masked, decayed scores, `[j][i]`.
    pub st: u32,
    /// γ^d for d = 0..=C.
    pub decay: u32,
    /// Total bytes.
    pub total: u32,
}

impl SharedLayout {
    /// The layout for head dims `k`, `v` and chunk `c`.
    pub const fn new(k: u32, v: u32, c: u32) -> Self {
        let r = 0;
        let qt = r + k * v * 4;
        let kt = qt + k * c * 4;
        let vv = kt + k * c * 4;
        let st = vv + c * v * 4;
        let decay = st + c * c * 4;
        let total = decay + ((c + 1) * 4).div_ceil(16) * 16;
        SharedLayout {
            r,
            qt,
            kt,
            v: vv,
            st,
            decay,
            total,
        }
    }

    /// The blocked FMA path's layout ([`chunkwise_fma_blocked`]): q, k, v and score tiles of
    /// `b` rows, the decay table of the whole chunk `c`.
    pub const fn blocked(k: u32, v: u32, b: u32, c: u32) -> Self {
        let l = Self::new(k, v, b);
        SharedLayout {
            total: l.decay + ((c + 1) * 4).div_ceil(16) * 16,
            ..l
        }
    }
}

/// Check that this generator serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for an unsupported op, K, V, chunk, gamma set, tile, or a
/// shape whose shared memory exceeds the arch's limit.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    if spec.op == KernelOp::ChunkwiseSegmented {
        two_phase::check_envelope(spec)?;
    }
    if !matches!(
        spec.op,
        KernelOp::Chunkwise | KernelOp::ChunkwiseVarlen | KernelOp::ChunkwiseSegmented
    ) {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "the chunkwise generator emits chunkwise, chunkwise_varlen and chunkwise_segmented only",
        ));
    }
    if !SUPPORTED_K.contains(&spec.k) {
        return Err(unsupported(
            "head dim K",
            spec.k,
            "chunkwise serves K in {64, 128, 256}",
        ));
    }
    if !SUPPORTED_V.contains(&spec.v) {
        return Err(unsupported(
            "head dim V",
            spec.v,
            "chunkwise serves V in {64, 128, 256, 512}",
        ));
    }
    let Some(c) = spec.chunk else {
        return Err(unsupported(
            "chunk",
            "none",
            "chunkwise needs a chunk length",
        ));
    };
    if !SUPPORTED_CHUNKS.contains(&c) {
        return Err(unsupported(
            "chunk",
            c,
            "chunkwise serves C in {32, 64, 128, 256}",
        ));
    }
    if let GammaSet::Retnet { heads } = spec.gammas
        && !(1..=48).contains(&heads)
    {
        return Err(unsupported(
            "gamma set",
            spec.gammas.name(),
            "retnet(H) needs 1 <= H <= 48",
        ));
    }
    if spec.tile != TileConfig::default() || spec.tile.threads != THREADS {
        return Err(unsupported(
            "tile",
            format!("{:?}", spec.tile),
            "chunkwise uses the default tile (256 threads)",
        ));
    }
    let bytes = shared_bytes(spec);
    if bytes > max_dynamic_shared(spec.arch) {
        return Err(unsupported(
            "shared memory",
            bytes,
            format!(
                "{} allows at most {} bytes per CTA; use a shorter chunk",
                spec.arch,
                max_dynamic_shared(spec.arch)
            ),
        ));
    }
    Ok(())
}

/// The launch of a chunkwise kernel for `rows` batch rows and `heads` heads.
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or the grid is too large; spec errors as [`validate`].
pub fn launch_geometry(
    spec: &KernelSpec,
    rows: u32,
    heads: u32,
) -> Result<LaunchGeometry, GenError> {
    validate(spec)?;
    super::check_grid(spec, rows, heads)?;
    let threads = if chunkwise_tc::uses_tensor_cores(spec) {
        32 * chunkwise_tc::warps(spec)
    } else {
        THREADS
    };
    Ok(LaunchGeometry {
        grid: [rows, heads, spec.v / value_slice(spec)],
        block: [threads, 1, 1],
        dynamic_smem_bytes: shared_bytes(spec),
    })
}

/// Dynamic shared memory of the path that serves `spec`.
fn shared_bytes(spec: &KernelSpec) -> u32 {
    let c = spec.chunk.unwrap_or_default();
    if chunkwise_tc::uses_tensor_cores(spec) {
        chunkwise_tc::layout(spec).total
    } else {
        let (blk, vs) = fma_tiling(spec);
        SharedLayout::blocked(spec.k, vs, blk, c).total
    }
}

/// Columns of V (and of the state) one CTA of the FMA path serves: all of V when its f32
/// tiles fit the arch's shared memory, else the widest halving (down to 64) that fits; the
/// grid's z axis walks the V/slice slices, each recomputing the chunk's scores.
pub fn value_slice(spec: &KernelSpec) -> u32 {
    if chunkwise_tc::uses_tensor_cores(spec) {
        return chunkwise_tc::value_slice(spec);
    }
    fma_tiling(spec).1
}

/// The FMA path's (rows per block B, V columns per CTA). C ≤ 64: the whole chunk (B = C)
/// and the widest V slice that fits. Longer chunks, and C = 64 where even a 64-column slice
/// of the whole chunk does not fit (K = 256 on sm_80), are walked in blocks of 64 rows (32
/// where no 64-row layout fits) with at most [`chunkwise_fma_blocked::MAX_VALUE_SLICE`]
/// columns.
pub fn fma_tiling(spec: &KernelSpec) -> (u32, u32) {
    let c = spec.chunk.unwrap_or_default();
    let limit = max_dynamic_shared(spec.arch);
    let widest = |blk: u32, start: u32| {
        let mut vs = start;
        while vs > 64 && SharedLayout::blocked(spec.k, vs, blk, c).total > limit {
            vs /= 2;
        }
        vs
    };
    let fits = |blk: u32, vs: u32| SharedLayout::blocked(spec.k, vs, blk, c).total <= limit;
    if c <= FMA_WHOLE_CHUNK {
        let vs = widest(c, spec.v);
        if fits(c, vs) || c <= 32 {
            return (c, vs);
        }
    }
    let start = spec.v.min(chunkwise_fma_blocked::MAX_VALUE_SLICE);
    let wide = widest(64, start);
    if c > 64 && fits(64, wide) {
        (64, wide)
    } else {
        (32, widest(32, start))
    }
}

/// Parameter names in launch order (see the module table).
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

pub(crate) fn elem_ty(dtype: Dtype) -> Ty {
    match dtype {
        Dtype::F32 => Ty::F32,
        Dtype::F16 => Ty::F16,
        Dtype::Bf16 => Ty::Bf16,
    }
}

/// Load four consecutive elements of `dtype` in one access and widen them to f32.
pub(crate) fn load4_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address) -> Vec<Reg> {
    let ty = elem_ty(dtype);
    let raw = kb.ld_vec(Space::Global, ty, 4, addr);
    if ty == Ty::F32 {
        raw
    } else {
        raw.into_iter().map(|x| kb.cvt(Ty::F32, x, None)).collect()
    }
}

/// Round four f32 to `dtype` and store them in one access.
pub(crate) fn store4_from_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address, xs: &[Reg]) {
    let ty = elem_ty(dtype);
    let vals: Vec<Operand> = if ty == Ty::F32 {
        xs.iter().map(|&x| x.into()).collect()
    } else {
        xs.iter()
            .map(|&x| kb.cvt(ty, x, Some(Rounding::Rn)).into())
            .collect()
    };
    kb.st_vec(Space::Global, ty, addr, &vals);
}

/// log2 γ_h: the named set's immediate for head `h`, chosen by a `selp` chain.
pub(crate) fn select_log2_gamma(kb: &mut KernelBuilder, log2_gammas: &[f32], h: Reg) -> Reg {
    let mut g = kb.mov(Ty::F32, log2_gammas[0]);
    for (i, &l) in log2_gammas.iter().enumerate().skip(1) {
        let is_head = kb.setp(Cmp::Eq, h, i as u32);
        g = kb.selp(l, g, is_head);
    }
    g
}

/// Per-thread staging of one `[C][D]` operand from global memory: thread t moves the four
/// elements `4·(t mod D/4)..` of rows `t div (D/4) + j·rows_per_round`.
pub(crate) struct Stager {
    /// Column of the thread's four elements.
    pub(crate) col: Reg,
    /// First row.
    pub(crate) row: Reg,
    /// Rows between rounds.
    pub(crate) rows_per_round: u32,
    /// Rounds per chunk.
    rounds: u32,
}

impl Stager {
    pub(crate) fn new(kb: &mut KernelBuilder, t: Reg, d: u32, c: u32) -> Self {
        let groups = d / 4;
        let g = kb.and(t, groups - 1);
        let col = kb.shl(g, 2u32);
        let row = kb.shr(t, groups.trailing_zeros());
        let rows_per_round = THREADS / groups;
        Stager {
            col,
            row,
            rows_per_round,
            rounds: c / rows_per_round,
        }
    }

    /// A runtime loop over the rounds (an unrolled one lets ptxas hoist every round's loads
    /// and run out of registers): `body(kb, global address, shared address)` runs where the
    /// round's row is below the chunk's length `len`. Global addresses start at `first` and
    /// advance `row_step` bytes a round, shared ones at `shared_first` by `shared_step`.
    pub(crate) fn run(
        &self,
        kb: &mut KernelBuilder,
        first: Reg,
        row_step: Reg,
        len: Reg,
        shared_first: Reg,
        shared_step: u32,
        body: impl FnOnce(&mut KernelBuilder, Reg, Reg),
    ) {
        let at = kb.mov(Ty::U64, first);
        let sh = kb.mov(Ty::U32, shared_first);
        let row = kb.mov(Ty::U32, self.row);
        let rows_per_round = self.rows_per_round;
        kb.for_range(0u32, self.rounds, 1, |kb, _| {
            let inside = kb.setp(Cmp::Lt, row, len);
            kb.guarded(inside, false, |kb| body(kb, at, sh));
            let next = kb.add(at, row_step);
            kb.assign(at, next);
            let next = kb.add(sh, shared_step);
            kb.assign(sh, next);
            let next = kb.add(row, rows_per_round);
            kb.assign(row, next);
        });
    }
}

/// The `p_t` (dense) or `p_cu_seqlens` (varlen) parameter, declared in position 6.
/// The parameters of both chunkwise paths (FMA and tensor cores), declared once in the
/// launch order of the table above, so the two paths cannot drift apart.
pub(crate) struct ChunkwiseParams {
    pub q: ParamRef,
    pub k: ParamRef,
    pub v: ParamRef,
    pub o: ParamRef,
    pub h0: ParamRef,
    pub ht: ParamRef,
    /// `p_t` (dense) or `p_cu_seqlens` (varlen).
    pub lengths: ParamRef,
    pub scale: ParamRef,
    /// `p_states` and `p_segment_len`, segmented op only.
    pub segments: Option<(ParamRef, ParamRef)>,
    /// `p_heads` and `p_log2_gamma`, runtime-γ only.
    pub runtime: Option<(ParamRef, ParamRef)>,
}

/// Declare [`ChunkwiseParams`] for `spec`; `runtime_gamma` adds the runtime-γ pair.
pub(crate) fn declare_params(
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
        runtime: runtime_gamma.then(|| {
            (
                kb.param("p_heads", Ty::U32),
                kb.param("p_log2_gamma", Ty::U64),
            )
        }),
    }
}

fn declare_lengths(kb: &mut KernelBuilder, spec: &KernelSpec) -> ParamRef {
    if spec.op == KernelOp::ChunkwiseVarlen {
        kb.param("p_cu_seqlens", Ty::U64)
    } else {
        kb.param("p_t", Ty::U32)
    }
}

/// The first token of sequence `b` in the flattened token axis and its length: `b·T` and
/// `T` for a dense batch, `cu[b]` and `cu[b+1] − cu[b]` for a packed one.
pub(crate) fn sequence_bounds(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    lengths: &ParamRef,
    b: Reg,
) -> (Reg, Reg) {
    if spec.op == KernelOp::ChunkwiseVarlen {
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

/// Emit the chunkwise forward for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    if chunkwise_tc::uses_tensor_cores(spec) {
        return chunkwise_tc::generate(spec);
    }
    let (blk, vs) = fma_tiling(spec);
    if blk < spec.chunk.unwrap_or_default() {
        return chunkwise_fma_blocked::generate(spec, blk, vs);
    }
    let (kd, vd) = (spec.k, spec.v);
    let vs = value_slice(spec); // columns of V this CTA serves
    let c = spec.chunk.unwrap_or_default();
    let es = spec.dtype.size_bytes() as u32;
    let lay = SharedLayout::new(kd, vs, c);
    let log2_gammas = spec.gammas.log2_gammas()?;

    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("retention chunkwise forward: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header(
        "O = ((sQ) R) . xi + ((sQ) K^T . D) V ; R <- g^L R + K^T (V . zeta)  (f32 state on chip)",
    );
    kb.max_threads(THREADS);
    // Shared memory (over 80 KiB) already limits the path to one or two CTAs per SM; let
    // ptxas budget registers for one rather than spill.
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
        segments,
        runtime,
    } = declare_params(&mut kb, spec, log2_gammas.is_none());
    let smem = kb.dynamic_shared(
        "smem",
        lay.total,
        16,
        &format!(
            "f32 R [K,V] @{}, (sQ)^T [K,C] @{}, K^T [K,C] @{}, V [C,V] @{}, S^T [C,C] @{}, gamma^d [C+1] @{}",
            lay.r, lay.qt, lay.kt, lay.v, lay.st, lay.decay
        ),
    );

    kb.comment("one CTA per (row b = ctaid.x, head h = ctaid.y)");
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let (heads, log2_gamma) = match (&runtime, &log2_gammas) {
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
            (heads, select_log2_gamma(&mut kb, l, h))
        }
        (None, None) => unreachable!("a gamma set is either named or runtime"),
    };
    let (tok0, seq_len) = sequence_bounds(&mut kb, spec, &p_t, b);
    let (tok0, seq_len, segment) =
        two_phase::segment_of(&mut kb, spec, segments.as_ref(), &p_t, tok0, seq_len);
    let scale = kb.ld_param(&p_scale);
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
        "R = H0[b,h][:, {vs}z..{vs}z+{vs}] when given, else 0 (z = ctaid.z)"
    ));
    let z = two_phase::value_slice_index(&mut kb, spec);
    let v_col0 = kb.mul_lo(z, vs); // first V column of this CTA
    let bh = kb.mad_lo(b, heads, h);
    let bh_bytes = kb.mul_wide(bh, kd * vd * 4);
    // Thread t moves the four state columns 4(t mod vs/4).. of rows t div (vs/4) + j·R.
    let state_groups = vs / 4;
    let state_col = kb.and(t, state_groups - 1);
    let state_col4 = kb.shl(state_col, 2u32);
    let state_row = kb.shr(t, state_groups.trailing_zeros());
    let state_rows_per_round = THREADS / state_groups;
    let g_col = kb.add(v_col0, state_col4);
    let g_elem = kb.mad_lo(state_row, vd, g_col);
    let g_elem_bytes = kb.mul_wide(g_elem, 4u32);
    let state_bytes = kb.add(bh_bytes, g_elem_bytes); // this thread's first global group
    let my_state = kb.add(base, t16); // R as [K*vs/4] groups of 4, group t first
    let state_rounds = kd * vs / 4 / THREADS;
    let global_round = i64::from(state_rows_per_round * vd * 4);
    let h0_raw = kb.ld_param(&p_h0);
    let has_h0 = kb.setp(Cmp::Ne, h0_raw, 0u64);
    let (zero_state, state_ready) = (kb.label(), kb.label());
    kb.bra_if(has_h0, true, zero_state);
    let h0 = kb.global_ptr(&p_h0);
    let h0_bh = kb.add(h0, state_bytes);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let x = kb.ld_vec(
            Space::Global,
            Ty::F32,
            4,
            Address::reg(h0_bh, i64::from(r) * global_round),
        );
        let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_state, off), &x);
    }
    kb.bra_uni(state_ready);
    kb.place(zero_state);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let z: Operand = 0.0f32.into();
        kb.st_vec(Space::Shared, Ty::F32, Address::reg(my_state, off), &[z; 4]);
    }
    kb.place(state_ready);
    if let Some(seg) = &segment {
        seg.fold_into_shared(&mut kb, spec, log2_gamma, bh, g_elem_bytes, my_state);
    }
    kb.bar_sync(0);

    kb.comment("per-thread staging positions and global row strides (tokens are H*dim apart)");
    let stage_k = Stager::new(&mut kb, t, kd, c);
    let stage_v = Stager::new(&mut kb, t, vs, c);
    let tok_stride_v = kb.mul_wide(heads, vd * es); // bytes between tokens of v/o
    let round_step_k = kb.mul_wide(heads, stage_k.rows_per_round * kd * es);
    let round_step_v = kb.mul_wide(heads, stage_v.rows_per_round * vd * es);
    let (q, k, v, o) = (
        kb.global_ptr(&p_q),
        kb.global_ptr(&p_k),
        kb.global_ptr(&p_v),
        kb.global_ptr(&p_o),
    );
    let col_k_bytes = kb.mul_wide(stage_k.col, es);
    let v_col = kb.add(stage_v.col, v_col0);
    let col_v_bytes = kb.mul_wide(v_col, es);
    // Shared destinations of the thread's staged elements (round 0; rounds add immediates).
    let qt_elem = kb.mad_lo(stage_k.col, c, stage_k.row);
    let qt_off = kb.shl(qt_elem, 2u32);
    let st_qt = kb.add(base, qt_off); // + lay.qt / lay.kt
    let v_elem = kb.mad_lo(stage_v.row, vs, stage_v.col);
    let v_off = kb.shl(v_elem, 2u32);
    let st_v = kb.add(base, v_off); // + lay.v

    kb.comment(format!("walk the sequence in chunks of {c}"));
    kb.for_range(0u32, seq_len, c, |kb, c0| {
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);

        kb.comment("stage (s q)^T, k^T and v of rows < L as f32");
        let tok_k = kb.add(tok_c, stage_k.row);
        let th_k = kb.mad_lo(tok_k, heads, h);
        let qk_off = kb.mad_wide(th_k, kd * es, col_k_bytes);
        let q_first = kb.add(q, qk_off);
        let k_first = kb.add(k, qk_off);
        let kt_step = stage_k.rows_per_round * 4; // next rows: next columns of the transpose
        let sh_q = kb.add(st_qt, lay.qt);
        stage_k.run(
            kb,
            q_first,
            round_step_k,
            len,
            sh_q,
            kt_step,
            |kb, at, sh| {
                let xs = load4_f32(kb, spec.dtype, Address::reg(at, 0));
                for (e, &x) in xs.iter().enumerate() {
                    let xq = kb.mul(x, scale);
                    let off = i64::from(e as u32 * c * 4);
                    kb.st(Space::Shared, Address::reg(sh, off), xq);
                }
            },
        );
        let sh_k = kb.add(st_qt, lay.kt);
        stage_k.run(
            kb,
            k_first,
            round_step_k,
            len,
            sh_k,
            kt_step,
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
        let v_step = stage_v.rows_per_round * vs * 4;
        stage_v.run(
            kb,
            v_first,
            round_step_v,
            len,
            sh_v,
            v_step,
            |kb, at, sh| {
                let xs = load4_f32(kb, spec.dtype, Address::reg(at, 0));
                let xs: Vec<Operand> = xs.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Shared, Ty::F32, Address::reg(sh, 0), &xs);
            },
        );
        kb.bar_sync(0);

        kb.comment("S^T[j][i] = (i >= j) ? gamma^(i-j) (sQ_i . k_j) : 0");
        for_each_piece(kb, t, THREADS, c, c, |kb, p| {
            let acc = zero_acc(kb);
            let a_off = kb.shl(p.row, 2u32);
            let a = kb.add(base, a_off);
            let a = kb.add(a, lay.qt);
            let b_off = kb.shl(p.col, 2u32);
            let bb = kb.add(base, b_off);
            let bb = kb.add(bb, lay.kt);
            accumulate_shared(kb, &acc, a, c * 4, bb, c * 4, kd);
            // diff = i0 + C - j0 >= 0; row i0+r, column j0+cc is causal iff diff + r >= C + cc.
            let shifted = kb.add(p.row, c);
            let diff = kb.sub(shifted, p.col);
            let dst_elem = kb.mad_lo(p.col, c, p.row);
            let dst_off = kb.shl(dst_elem, 2u32);
            let dst = kb.add(base, dst_off);
            let mut masked = [[acc[0][0]; 4]; 4];
            for r in 0..4u32 {
                let dr = kb.add(diff, r);
                for cc in 0..4u32 {
                    let causal = kb.setp(Cmp::Ge, dr, c + cc);
                    let clamped = kb.max(dr, c + cc);
                    let cl4 = kb.shl(clamped, 2u32);
                    let at = kb.add(base, cl4);
                    let d = kb.ld(
                        Space::Shared,
                        Ty::F32,
                        Address::reg(at, i64::from(lay.decay - 4 * (c + cc))),
                    );
                    let val = kb.mul(acc[r as usize][cc as usize], d);
                    masked[cc as usize][r as usize] = kb.selp(val, 0.0f32, causal);
                }
            }
            // masked[cc][r] is S^T[j0+cc][i0+r]: one v4 store per column of S.
            let dst = kb.add(dst, lay.st);
            store_piece(kb, &masked, dst, c * 4);
        });
        kb.bar_sync(0);

        kb.comment("O[i] = xi_i (sQ_i . R) + sum_{j<L} S[i][j] v_j ; rows i < L to global");
        for_each_piece(kb, t, THREADS, c, vs, |kb, p| {
            let acc = zero_acc(kb);
            let a_off = kb.shl(p.row, 2u32);
            let a_base = kb.add(base, a_off);
            let a = kb.add(a_base, lay.qt);
            let b_off = kb.shl(p.col, 2u32);
            let b_base = kb.add(base, b_off);
            let bb = kb.add(b_base, lay.r);
            accumulate_shared(kb, &acc, a, c * 4, bb, vs * 4, kd);
            let acc: [[Reg; 4]; 4] = std::array::from_fn(|r| {
                let xi = kb.ld(
                    Space::Shared,
                    Ty::F32,
                    Address::reg(a_base, i64::from(lay.decay + 4 * (r as u32 + 1))),
                );
                std::array::from_fn(|cc| kb.mul(acc[r][cc], xi))
            });
            let a = kb.add(a_base, lay.st);
            let bb = kb.add(b_base, lay.v);
            accumulate_shared(kb, &acc, a, c * 4, bb, vs * 4, len);
            let tok_i = kb.add(tok_c, p.row);
            let th = kb.mad_lo(tok_i, heads, h);
            let o_col = kb.add(p.col, v_col0);
            let col_bytes = kb.mul_wide(o_col, es);
            let o_off = kb.mad_wide(th, vd * es, col_bytes);
            let mut at = kb.add(o, o_off);
            for r in 0..4u32 {
                if r > 0 {
                    at = kb.add(at, tok_stride_v);
                }
                let i = kb.add(p.row, r);
                let inside = kb.setp(Cmp::Lt, i, len);
                let row = acc[r as usize];
                kb.guarded(inside, false, |kb| {
                    store4_from_f32(kb, spec.dtype, Address::reg(at, 0), &row);
                });
            }
        });
        kb.bar_sync(0);

        kb.comment("R <- gamma^L R + sum_{j<L} gamma^(L-1-j) k_j^T v_j");
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
        kb.bar_sync(0);
    });

    kb.comment("H_T[b,h] = R when asked for");
    let ht_raw = kb.ld_param(&p_ht);
    let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
    let done = kb.label();
    kb.bra_if(has_ht, true, done);
    if let Some(seg) = &segment {
        seg.skip_unless_last(&mut kb, done);
    }
    let ht = kb.global_ptr(&p_ht);
    let ht_bh = kb.add(ht, state_bytes);
    for r in 0..state_rounds {
        let off = i64::from(r * THREADS * 16);
        let x = kb.ld_vec(Space::Shared, Ty::F32, 4, Address::reg(my_state, off));
        let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
        kb.st_vec(
            Space::Global,
            Ty::F32,
            Address::reg(ht_bh, i64::from(r) * global_round),
            &x,
        );
    }
    kb.place(done);
    kb.ret();
    kb.finish()
}
