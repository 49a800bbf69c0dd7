//! How the chunk families tile a chunk on the GPU — the one place that decides, per spec,
//! which path serves it (tensor cores whole-chunk or streamed, FMA whole-chunk or blocked),
//! how many columns of V a CTA serves, its threads and its shared memory. The chunkwise
//! family (one-pass and phase 2 of two-phase) and the two-phase family's phase 1 both read
//! it, so they cannot disagree; plans ([`crate::plan()`]) report it.

use retention_core::Dtype;

use super::shared_window::{decay_table_bytes, f32_arrays, tiles16, widest_slice};
use crate::dsl::tiles::SharedTile16;
use crate::error::{check_span, unsupported};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{GenError, GenResult, LaunchGeometry};

/// Head dims K the catalog holds: tiles exactly as wide as the rows. Any other K up to
/// [`MAX_K`] is served on a padded tile ([`padded_dim`]).
pub const SUPPORTED_K: [u32; 3] = [64, 128, 256];
/// Head dims V the catalog holds (any other V up to [`MAX_V`]: padded).
pub const SUPPORTED_V: [u32; 4] = [64, 128, 256, 512];
/// Largest head dim K served.
pub const MAX_K: u32 = 256;
/// Largest head dim V served.
pub const MAX_V: u32 = 512;

/// Whether `spec`'s K and V are catalog dims, whose tiles are exactly as wide as the rows
/// (no masked tails: the catalog's PTX).
pub fn exact_dims(spec: &KernelSpec) -> bool {
    SUPPORTED_K.contains(&spec.k) && SUPPORTED_V.contains(&spec.v)
}

/// The width a head dim's tiles are generated for: the next power of two, at least 64 —
/// the catalog dims themselves, so every tiling rule below holds unchanged. Columns past
/// the real dim are zero-filled as they are staged and never stored (the masked global
/// views of [`crate::blocks::global`]); the shared memory and the work are those of the
/// padded dims.
pub const fn padded_dim(d: u32) -> u32 {
    let p = d.next_power_of_two();
    if p < 64 { 64 } else { p }
}

/// Whether the tensor-core paths serve `spec`'s head dims: the catalog's, or any even K and
/// V on padded tiles (their rows are 4-byte aligned in 16 bits, so `cp.async` copies 16, 8
/// or 4 bytes at a time, [`crate::blocks::staging::ColumnTail`]; odd dims, whose 16-bit rows
/// are only 2-byte aligned, take the FMA path).
pub fn tc_dims(spec: &KernelSpec) -> bool {
    exact_dims(spec) || spec.k.is_multiple_of(2) && spec.v.is_multiple_of(2)
}

/// `spec` with K and V replaced by their tile widths ([`padded_dim`]): what every tiling
/// decision is made on. Global addressing keeps the real dims (row strides, state
/// `[N,H,K,V]`).
pub fn tile_spec(spec: &KernelSpec) -> KernelSpec {
    KernelSpec {
        k: padded_dim(spec.k),
        v: padded_dim(spec.v),
        ..*spec
    }
}
/// Chunk lengths served.
pub const SUPPORTED_CHUNKS: [u32; 4] = [32, 64, 128, 256];
/// Longest chunk the FMA path stages whole; longer ones walk it in blocks
/// (the blocked FMA path).
pub const FMA_WHOLE_CHUNK: u32 = 64;
/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Most V columns one CTA serves on the blocked FMA path: the O block's accumulators stay in registers
/// across the J loop (B·slice/16 values per 256 threads, at most 32 per thread).
pub const MAX_BLOCKED_VALUE_SLICE: u32 = 128;

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
    /// The shared window's comment, `tiles` naming R, (sQ)ᵀ, Kᵀ, V and Sᵀ with their shapes.
    pub fn describe(&self, tiles: [&str; 5]) -> String {
        let [r, qt, kt, v, st] = tiles;
        let at = [self.r, self.qt, self.kt, self.v, self.st, self.decay];
        format!(
            "f32 {r} @{}, {qt} @{}, {kt} @{}, {v} @{}, {st} @{}, gamma^d [C+1] @{}",
            at[0], at[1], at[2], at[3], at[4], at[5]
        )
    }

    /// The layout for head dims `k`, `v` and chunk `c`.
    pub const fn new(k: u32, v: u32, c: u32) -> Self {
        let lens = [k * v, k * c, k * c, c * v, c * c];
        let ([r, qt, kt, vv, st], decay) = f32_arrays(0, lens);
        let total = decay + decay_table_bytes(c);
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

    /// The blocked FMA path's layout (the blocked FMA path): q, k, v and score tiles of
    /// `b` rows, the decay table of the whole chunk `c`.
    pub const fn blocked(k: u32, v: u32, b: u32, c: u32) -> Self {
        let l = Self::new(k, v, b);
        SharedLayout {
            total: l.decay + decay_table_bytes(c),
            ..l
        }
    }
}

/// Dynamic shared memory of the path that serves `spec`.
pub fn shared_bytes(spec: &KernelSpec) -> u32 {
    let tc = uses_tensor_cores(spec);
    let spec = &tile_spec(spec);
    let c = spec.chunk.unwrap_or_default();
    if tc {
        tc_layout(spec).total
    } else {
        let (blk, vs) = fma_tiling(spec);
        SharedLayout::blocked(spec.k, vs, blk, c).total
    }
}

/// Columns of V (and of the state) one CTA of the FMA path serves: all of V when its f32
/// tiles fit the arch's shared memory, else the widest halving (down to 64) that fits; the
/// grid's z axis walks the V/slice slices, each recomputing the chunk's scores.
pub fn value_slice(spec: &KernelSpec) -> u32 {
    if uses_tensor_cores(spec) {
        let spec = &tile_spec(spec);
        return tc_value_slice(spec);
    }
    fma_tiling(spec).1
}

/// The FMA path's (rows per block B, V columns per CTA). C ≤ 64: the whole chunk (B = C)
/// and the widest V slice that fits. Longer chunks, and C = 64 where even a 64-column slice
/// of the whole chunk does not fit (K = 256 on sm_80), are walked in blocks of 64 rows (32
/// where no 64-row layout fits) with at most [`MAX_BLOCKED_VALUE_SLICE`]
/// columns.
pub fn fma_tiling(spec: &KernelSpec) -> (u32, u32) {
    let spec = &tile_spec(spec);
    let c = spec.chunk.unwrap_or_default();
    let limit = spec.arch.max_dynamic_shared();
    let widest = |blk: u32, start: u32| {
        widest_slice(start, 64, limit, |vs| {
            SharedLayout::blocked(spec.k, vs, blk, c).total
        })
    };
    let fits = |blk: u32, vs: u32| SharedLayout::blocked(spec.k, vs, blk, c).total <= limit;
    if c <= FMA_WHOLE_CHUNK {
        let vs = widest(c, spec.v);
        if fits(c, vs) || c <= 32 {
            return (c, vs);
        }
    }
    let start = spec.v.min(MAX_BLOCKED_VALUE_SLICE);
    let wide = widest(64, start);
    if c > 64 && fits(64, wide) {
        (64, wide)
    } else {
        (32, widest(32, start))
    }
}

/// Whether `spec` is served by this path: 16-bit inputs, every (K, V, C) the chunkwise
/// generator serves. Most stage whole chunks ([`TcLayout`] of a [`value_slice`]); C = 256
/// with K ≥ 128 (whose whole tiles need more than 255 registers or more shared memory than
/// an SM has) and C = 128 with K = 256 on sm_80 stream their k and v blocks instead
/// ([`streamed_plan`], the chunkwise family's `tc_streamed`).
pub fn uses_tensor_cores(spec: &KernelSpec) -> bool {
    spec.dtype != Dtype::F32
        && tc_dims(spec)
        && spec.k <= 256
        && spec.chunk.is_some()
        && (stages_whole_chunks(spec) || streamed_plan(spec).is_some())
}

/// Whether a tensor-core CTA holds the whole chunk's q, k, v and o tiles: C = 256 only with
/// K = 64 (with K = 128 ptxas needs more than 255 registers; K = 256 does not fit), not C =
/// 128 with a K padded to 256, and only where the tiles fit the arch's shared memory (sm_80
/// leaves C = 128 with K = 256 out).
fn stages_whole_chunks(spec: &KernelSpec) -> bool {
    let padded = !exact_dims(spec);
    let spec = &tile_spec(spec);
    let Some(c) = spec.chunk else {
        return false;
    };
    // A padded K = 256 with C = 128 streams: its whole-chunk kernel needs all 255 registers
    // at the catalog's K = 256 already, and the masked tails' few more spill (sm_90).
    (c < 256 || spec.k == 64)
        && !(padded && spec.k == 256 && c >= 128)
        && TcLayout::new(spec.k, tc_value_slice(spec), c).total <= spec.arch.max_dynamic_shared()
}

/// How a 16-bit spec that cannot stage whole chunks streams them, or `None` where it
/// stages whole chunks (or is not a tensor-core spec at all).
pub fn streamed_plan(spec: &KernelSpec) -> Option<StreamedPlan> {
    let c = spec.chunk?;
    if spec.dtype == Dtype::F32
        || !tc_dims(spec)
        || spec.k > 256
        || c < 128
        || stages_whole_chunks(spec)
    {
        return None;
    }
    let spec = &tile_spec(spec);
    StreamedPlan::new(
        spec.k,
        tc_value_slice(spec),
        c,
        tc_warps(spec),
        spec.arch.max_dynamic_shared(),
    )
}

/// The shared tiles of the tensor-core path serving `spec`.
pub fn tc_layout(spec: &KernelSpec) -> TcLayout {
    let spec = &tile_spec(spec);
    let c = spec.chunk.unwrap_or_default();
    match streamed_plan(spec) {
        Some(plan) => plan.layout(spec.k, tc_value_slice(spec), c),
        None => TcLayout::new(spec.k, tc_value_slice(spec), c),
    }
}

/// Columns of V (and of the state) one CTA serves: at most 128, and 64 where the f32 tiles
/// of S, O and a 128-column state slice would need more than 255 registers per thread
/// (K = 128 with C = 64; K = 256, whose warps hold two state slices; C ≥ 128). The grid's z
/// axis walks the V/slice slices, each recomputing the chunk's scores.
pub fn tc_value_slice(spec: &KernelSpec) -> u32 {
    let spec = &tile_spec(spec);
    let c = spec.chunk.unwrap_or_default();
    if spec.k == 256 || c > WHOLE_SCORE_TILE || spec.k == 128 && c == 64 {
        spec.v.min(64)
    } else {
        spec.v.min(128)
    }
}

/// Warps per CTA: one 16-row slice of the chunk and of the state each, at most 8 (K = 256:
/// each warp holds two 16-row state slices, 128 rows apart).
pub fn tc_warps(spec: &KernelSpec) -> u32 {
    let spec = &tile_spec(spec);
    (spec.chunk.unwrap_or_default().max(spec.k) / 16).min(8)
}

/// Shared tiles of the tensor-core path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcLayout {
    /// q `[C][K]`.
    pub q: SharedTile16,
    /// k `[C][K]`.
    pub k: SharedTile16,
    /// v `[C][V]`.
    pub v: SharedTile16,
    /// R̃ `[K][V]`: the state rounded to the input type.
    pub rh: SharedTile16,
    /// o `[C][V]` on its way out.
    pub o: SharedTile16,
    /// γ^d, d = 0..=C, f32.
    pub decay: u32,
    /// Total bytes.
    pub total: u32,
}

impl TcLayout {
    /// The layout for head dims `k`, `v` and chunk `c`: whole-chunk tiles.
    pub const fn new(k: u32, v: u32, c: u32) -> Self {
        Self::with_rows(k, v, c, c, c)
    }

    /// The layout with `q_rows` rows of q and o and `kv_rows` rows of k and v, in the order
    /// q, k, v, R̃, o, then γ^d for d = 0..=C.
    pub const fn with_rows(k: u32, v: u32, c: u32, q_rows: u32, kv_rows: u32) -> Self {
        let shapes = [(q_rows, k), (kv_rows, k), (kv_rows, v), (k, v), (q_rows, v)];
        let ([q, kt, vt, rh, o], decay) = tiles16(0, shapes);
        TcLayout {
            q,
            k: kt,
            v: vt,
            rh,
            o,
            decay,
            total: decay + decay_table_bytes(c),
        }
    }
}

/// Longest chunk whose whole 16-row score strip a warp holds in registers; longer chunks
/// build it 64 columns at a time (`long_chunk_rows`).
pub const WHOLE_SCORE_TILE: u32 = 64;

/// Key rows per k, v block.
pub const BLOCK: u32 = 64;
/// Columns of a score strip built at a time (16 f32 registers a lane).
pub const SCORE_COLS: u32 = 64;

/// How a streamed CTA walks a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedPlan {
    /// Query rows per pass (P).
    pub pass_rows: u32,
    /// Column groups of O (G): warp w serves columns `(w / (P/16))·V/G..` of its row block.
    pub groups: u32,
    /// k, v blocks held at once: C/64 (resident for the chunk) or 1 (refilled per use).
    pub slots: u32,
}

impl StreamedPlan {
    /// The plan for head dim `k`, V slice `vs`, chunk `c`, `warps` warps, within `limit`
    /// bytes of shared memory; `None` where not even one slot fits.
    pub fn new(k: u32, vs: u32, c: u32, warps: u32, limit: u32) -> Option<Self> {
        let groups = if k == 256 { 2 } else { 1 };
        let resident = StreamedPlan {
            pass_rows: 16 * warps / groups,
            groups,
            slots: c / BLOCK,
        };
        // One refilled slot holds one block: passes of one block's rows.
        let refilled = StreamedPlan {
            pass_rows: BLOCK,
            groups: 16 * warps / BLOCK,
            slots: 1,
        };
        [resident, refilled]
            .into_iter()
            .find(|p| p.layout(k, vs, c).total <= limit)
    }

    /// The shared tiles: q `[P][K]`, k `[slots·64][K]`, v `[slots·64][V]`, R̃ `[K][V]`,
    /// o `[P][V]`, then γ^d for d = 0..=C.
    pub const fn layout(&self, k: u32, vs: u32, c: u32) -> TcLayout {
        TcLayout::with_rows(k, vs, c, self.pass_rows, self.slots * BLOCK)
    }
}

/// The chunk field of a spec that needs one from `listed`: `why` = (the message when it is
/// missing, the message when it is not listed).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the chunk field.
pub fn check_listed_chunk(
    chunk: Option<u32>,
    listed: &[u32],
    (missing, outside): (&str, &str),
) -> Result<u32, GenError> {
    let c = chunk.ok_or_else(|| unsupported("chunk", "none", missing))?;
    if listed.contains(&c) {
        Ok(c)
    } else {
        Err(unsupported("chunk", c, outside))
    }
}

/// The tile config is one the generator serves (`tile`: whether it is, and why not) and
/// `bytes` of dynamic shared memory fit the arch (`hint`: what to do when they do not).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the tile or the shared memory.
pub fn check_tile_and_shared(
    spec: &KernelSpec,
    (tile_ok, tile_why): (bool, &str),
    bytes: u32,
    hint: &str,
) -> Result<(), GenError> {
    if !tile_ok {
        return Err(unsupported("tile", format!("{:?}", spec.tile), tile_why));
    }
    let max = spec.arch.max_dynamic_shared();
    if bytes > max {
        let why = format!("{} allows at most {max} bytes per CTA; {hint}", spec.arch);
        return Err(unsupported("shared memory", bytes, why));
    }
    Ok(())
}

/// A named RetNet gamma set serves 1 ≤ H ≤ 48 heads.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the gamma set.
pub fn check_retnet_heads(gammas: GammaSet) -> Result<(), GenError> {
    match gammas {
        GammaSet::Retnet { heads } if !(1..=48).contains(&heads) => Err(unsupported(
            "gamma set",
            gammas.name(),
            "retnet(H) needs 1 <= H <= 48",
        )),
        _ => Ok(()),
    }
}

/// Check that the chunk tiling serves `spec`'s shape: K, V, C, gamma set, tile and shared
/// memory (whatever its op).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field outside the tiling.
pub fn check_shape(spec: &KernelSpec) -> Result<(), GenError> {
    check_dims(spec)?;
    let why = (
        "chunkwise needs a chunk length",
        "chunkwise serves C in {32, 64, 128, 256}",
    );
    check_listed_chunk(spec.chunk, &SUPPORTED_CHUNKS, why)?;
    check_retnet_heads(spec.gammas)?;
    let tile_ok = spec.tile == TileConfig::default() && spec.tile.threads == THREADS;
    check_tile_and_shared(
        spec,
        (tile_ok, "chunkwise uses the default tile (256 threads)"),
        shared_bytes(spec),
        "use a shorter chunk",
    )
}

/// Check that K and V are head dims the chunk tiling serves: 1..=[`MAX_K`], 1..=[`MAX_V`].
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming `head dim K` or `head dim V`.
pub fn check_dims(spec: &KernelSpec) -> Result<(), GenError> {
    check_span(
        "head dim K",
        spec.k,
        MAX_K,
        "chunkwise serves 1 <= K <= 256",
    )?;
    check_span(
        "head dim V",
        spec.v,
        MAX_V,
        "chunkwise serves 1 <= V <= 512",
    )?;
    Ok(())
}

/// The launch of a one-pass chunk kernel (or of ONE segment of phase 2) for `rows` batch
/// rows and `heads` heads: grid `(rows, heads, ⌈V / value_slice⌉)` (phase 2: the padded
/// V / value_slice); `spec` checked by the caller.
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or the grid is too large.
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    spec.check_grid(rows, heads)?;
    let threads = if uses_tensor_cores(spec) {
        32 * tc_warps(spec)
    } else {
        THREADS
    };
    let vs = value_slice(spec);
    // A padded V's last slices may hold no real column: the one-pass kernels (their slice is
    // ctaid.z itself) skip them; phase 2 decodes ctaid.z = segment·slices + slice and keeps
    // the power-of-two count.
    let slices = if spec.op == KernelOp::ChunkwiseSegmented {
        tile_spec(spec).v / vs
    } else {
        spec.v.div_ceil(vs)
    };
    Ok(LaunchGeometry {
        grid: [rows, heads, slices],
        block: [threads, 1, 1],
        dynamic_smem_bytes: shared_bytes(spec),
    })
}
