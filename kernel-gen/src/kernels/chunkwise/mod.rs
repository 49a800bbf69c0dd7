//! The chunkwise retention forward (ARCHITECTURE §1, chunkwise form), one CTA per (row b, head h)
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
//! The segmented op (`chunkwise_segmented`, phase 2 of [`super::two_phase`]) adds
//! `p_states` (`.u64`, f32 `[B,H,S−1,K,V]` from phase 1) and `p_segment_len` (`.u32`, L)
//! after `p_scale`, before the runtime-γ pair, and runs CTA (b, h, z) over one segment.
//!
//! The varlen op (`chunkwise_varlen`) reads packed q, k `[1,ΣT,H,K]`, v, o `[1,ΣT,H,V]`,
//! states `[N,H,K,V]`, and runs CTA (n, h) over tokens `cu[n]..cu[n+1]` (grid `(N, H, 1)`);
//! chunks restart at every sequence boundary.
//!
//! Three paths share this parameter table and grid `(B, H, V / value_slice)` (V padded as
//! below; grid z walks
//! slices of V's columns; 1 when a CTA serves all of V): f16/bf16 run on tensor cores
//! ([`tc`], every (K, V, C); C = 256 with K ≥ 128, and C = 128 with K = 256 on
//! sm_80, stream their k and v blocks through shared memory, [`tc_streamed`]),
//! `32·min(max(C, K)/16, 8)` threads, f32 state in `mma` accumulators, at most 128 columns
//! of V per CTA; f32 runs the FMA path below
//! (256 threads, f32 state in shared memory), which walks chunks longer than shared memory
//! holds whole in blocks ([`fma_blocked`]: C ≥ 128, and C = 64 with K = 256 on
//! sm_80). [`launch_geometry`] gives the block and the dynamic shared memory (over 48 KiB on
//! the FMA path: the runtime must raise the kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES`
//! attribute before launching).
//!
//! Head dims: any 1 ≤ K ≤ 256, 1 ≤ V ≤ 512. The catalog's K ∈ {64, 128, 256} and
//! V ∈ {64, …, 512} use tiles exactly as wide as the rows. Any other dim is generated for a
//! padded tile (`chunk_tiling::padded_dim`: the next power of two, at least 64) and every
//! tiling decision (path, value slice, threads, shared memory) is the padded dims'; global
//! rows, the state `[N,H,K,V]` and the grid's column offsets keep the real K, V. Loads of
//! padded columns (and, in this mode, of rows past a partial chunk) stage zeros and stores
//! of them are skipped, through the masked views of `blocks::global` and `blocks::staging`:
//! FMA paths guard one vector access per 4 columns (scalar accesses when the dim is not a
//! multiple of 4), tensor-core paths `cp.async` 16, 8 or 4 bytes at a time (the widest that
//! keeps every copy aligned inside a row; odd 16-bit dims take the FMA path). Padding costs
//! the padded dims' shared memory and work: K = 100 computes as K = 128.
//!
//! Numerics (FMA path): every product accumulates in f32; q, k, v are widened to f32 as they
//! are staged. Decays come from one table `γ^d, d = 0..=C`,
//! computed once per CTA as 2^(d·log2 γ_h) by [`crate::blocks::decay::emit_exp2`] — relative exponents only,
//! all ≤ 0, so nothing overflows and far terms underflow to 0. The causal mask is a `selp`,
//! never a multiplication, so stale shared rows past a partial chunk cannot leak NaN; the
//! inner loops that read V or K rows run to L, not C.

pub mod fma;
pub mod fma_blocked;
pub mod tc;
pub mod tc_streamed;

pub use crate::math::chunk_params::param_names;
pub use crate::math::chunk_tiling::{
    FMA_WHOLE_CHUNK, SUPPORTED_CHUNKS, SUPPORTED_K, SUPPORTED_V, SharedLayout, StreamedPlan,
    TcLayout, fma_tiling, streamed_plan, tc_layout, uses_tensor_cores, value_slice,
};
use crate::math::{chunk_tiling, segment_fold};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{KernelOp, KernelSpec};
use crate::{GenError, GenResult, LaunchGeometry};

/// Check that this generator serves `spec`: a chunkwise op on a shape the chunk tiling
/// serves (and, segmented, within the two-phase envelope).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for an unsupported op, K, V, chunk, gamma set, tile, or a
/// shape whose shared memory exceeds the arch's limit.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    if spec.op == KernelOp::ChunkwiseSegmented {
        segment_fold::check_envelope(spec)?;
    }
    let ops = [
        KernelOp::Chunkwise,
        KernelOp::ChunkwiseVarlen,
        KernelOp::ChunkwiseSegmented,
    ];
    spec.check_op(
        &ops,
        "the chunkwise generator emits chunkwise, chunkwise_varlen and chunkwise_segmented only",
    )?;
    chunk_tiling::check_shape(spec)
}

/// The launch of a chunkwise kernel for `rows` batch rows and `heads` heads.
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or the grid is too large; spec errors as [`validate`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    chunk_tiling::launch_geometry(spec, rows, heads)
}

/// The path that serves `spec` (checked by the caller).
pub fn path(spec: &KernelSpec) -> KernelPath {
    if uses_tensor_cores(spec) {
        return streamed_plan(spec).map_or(KernelPath::TensorCores, KernelPath::from);
    }
    let (blk, _) = fma_tiling(spec);
    if blk < spec.chunk.unwrap_or_default() {
        KernelPath::FmaBlocked { block_rows: blk }
    } else {
        KernelPath::Fma
    }
}

/// The plan of one launch (for the segmented op, ONE segment per (row, head); see
/// [`crate::two_phase_plan`]).
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let geometry = launch_geometry(spec, size.rows, size.heads)?;
    let (vs, params) = (value_slice(spec), param_names(spec));
    Ok(KernelPlan::new(spec, path(spec), vs, geometry, params))
}

/// Emit the chunkwise forward for `spec` (validated first): tensor cores for 16-bit inputs
/// (whole chunks, or streamed), FMA for f32 (whole chunks, or blocked).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    if uses_tensor_cores(spec) {
        return tc::generate(spec);
    }
    let (blk, vs) = fma_tiling(spec);
    if blk < spec.chunk.unwrap_or_default() {
        return fma_blocked::generate(spec, blk, vs);
    }
    fma::generate(spec)
}
