//! The parallel retention forward (ARCHITECTURE §1, parallel form), flash-style: no T×T matrix
//! ever reaches global memory.
//!
//! ```text
//! O = s·((Q Kᵀ) ⊙ D) V,   D[n][m] = γ^(n−m) for n ≥ m, else 0        (per row b, head h)
//!
//! CTA (b, h, z) owns query tiles i of B rows (B = spec.chunk, the tile size):
//!     O_i = 0
//!     for s = 0, 1, …, i  (key tile j = i − s; tiles above the diagonal are never loaded):
//!         stop once γ^((s−1)·B+1) — the largest decay of tile j — is below 2^−150
//!         S  = Q_i K_jᵀ ⊙ band_s,    band_s[d] = γ^(s·B + d − (B−1)) or 0 where negative
//!         O_i += S V_j                                               (f32)
//!     o[rows of tile i] = s·O_i                                      (written once)
//! ```
//!
//! The decay of element (r, c) of tile pair (i, j) depends only on d = r − c + B − 1, so each
//! key tile gets one band table of 2B − 1 decays computed as 2^(n·log2 γ) by
//! [`decay::emit_exp2`] on the *relative* exponent n = s·B + d − (B − 1) (an exact integer,
//! never negative where used; negative n is the causal mask and stores 0). Baked immediates
//! give log2 γ for [`GammaSet::Retnet`], an f32 buffer for [`GammaSet::Runtime`].
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses):
//!
//! | # | name           | type   | meaning                                         |
//! |---|----------------|--------|-------------------------------------------------|
//! | 0 | `p_q`          | `.u64` | q `[B,T,H,K]` in the spec's dtype               |
//! | 1 | `p_k`          | `.u64` | k `[B,T,H,K]` in dtype                          |
//! | 2 | `p_v`          | `.u64` | v `[B,T,H,V]` in dtype                          |
//! | 3 | `p_o`          | `.u64` | o `[B,T,H,V]` in dtype (written, every element) |
//! | 4 | `p_t`          | `.u32` | T, tokens per row (0 is allowed: nothing runs)  |
//! | 5 | `p_scale`      | `.f32` | s, applied exactly once                         |
//! | 6 | `p_heads`      | `.u32` | H — runtime-γ variant only                      |
//! | 7 | `p_log2_gamma` | `.u64` | log2 γ_h, f32 `[H]` — runtime-γ variant only    |
//!
//! Grid `(B, H, S·Z)` with S = V / [`value_slice`] value slices: CTA z serves value columns
//! `(z mod S)·vs..` and query tiles `n−1−z/S, n−1−z/S−Z, …` (n = ⌈T/B⌉, longest first), so
//! any Z ≥ 1 is correct; [`plan`] gives Z = n (one query tile per CTA,
//! capped at the grid limit), [`launch_geometry`] (which does not know T) gives Z = 1.
//!
//! Head dims: any 1 ≤ K ≤ 256, 1 ≤ V ≤ 512; dims outside the catalog run on padded tiles
//! with masked tails exactly as the chunkwise family's module docs describe (V below is the
//! padded V; global rows keep the real dims).
//!
//! Two paths share this table: f16/bf16 on tensor cores (odd head dims: the FMA path) ([`tc`]: B/16 warps, each
//! owning 16 query rows, `mma` m16n8k16 with f32 accumulators, `cp.async` + `ldmatrix` on
//! swizzled tiles, value slices of at most 128 columns so O stays in registers), f32 on the
//! FMA units ([`fma`]: 256 threads, f32 tiles in shared memory, value slices halved
//! until the tiles fit the arch's shared memory). Dynamic shared memory can exceed 48 KiB:
//! the runtime must raise the kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES` attribute first.

pub mod fma;
pub mod tc;

use crate::blocks::cta::cta_row_head;
use crate::blocks::decay;
use crate::dsl::{
    Address, Axis, Cmp, Kernel, KernelBuilder, ParamRef, Reg, SharedRef, Space, Sreg, Ty,
};
use crate::error::check_span;
use crate::math::chunk_params::declare_runtime_gamma;
use crate::math::chunk_tiling::{
    MAX_K, MAX_V, check_listed_chunk, check_retnet_heads, check_tile_and_shared, tc_dims, tile_spec,
};
use crate::math::decay_band::tile_step_vanishes;
use crate::math::kernel_head;
use crate::math::shared_window::widest_slice;
use crate::math::tile_walk::{
    GridZ, TilePairLayout, for_each_owned_tile, for_steps, spread_over_tiles, tile_count,
};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{GenError, GenResult, LaunchGeometry};

/// Head dims K the catalog holds (any other K up to 256 runs on a padded tile,
/// [`tile_spec`]).
pub const SUPPORTED_K: [u32; 3] = [64, 128, 256];
/// Head dims V the catalog holds (any other V up to 512: padded).
pub const SUPPORTED_V: [u32; 4] = [64, 128, 256, 512];
/// Tile sizes B (query and key rows per tile) served.
pub const SUPPORTED_TILES: [u32; 2] = [32, 64];

pub use crate::spec::default_parallel_tile as default_tile;

/// Check that this generator serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for another op, an unsupported K, V, tile, gamma set or
/// [`TileConfig`], or a shape whose shared memory exceeds the arch's limit.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    spec.check_op(
        &[KernelOp::Parallel],
        "the parallel generator emits parallel only",
    )?;
    check_span("head dim K", spec.k, MAX_K, "parallel serves 1 <= K <= 256")?;
    check_span("head dim V", spec.v, MAX_V, "parallel serves 1 <= V <= 512")?;
    let why = (
        "parallel needs a tile size (the chunk field)",
        "parallel serves tiles B in {32, 64}",
    );
    check_listed_chunk(spec.chunk, &SUPPORTED_TILES, why)?;
    check_retnet_heads(spec.gammas)?;
    let tile_ok = spec.tile == TileConfig::default();
    check_tile_and_shared(
        spec,
        (tile_ok, "parallel uses the default tile config"),
        shared_bytes(spec),
        "use a smaller tile",
    )
}

/// Whether `spec` runs on tensor cores (f16/bf16 at catalog dims or any even K, V on padded
/// tiles, [`tc_dims`]) rather than the FMA path (f32, and 16-bit inputs at odd head dims,
/// staged as f32 with masked tails).
pub fn uses_tensor_cores(spec: &KernelSpec) -> bool {
    spec.dtype != retention_core::Dtype::F32 && tc_dims(spec)
}

/// Columns of V one CTA serves: at most 128 on tensor cores (the f32 O tile lives in
/// registers), on the FMA path all of V unless its f32 tiles overflow shared memory, then
/// the widest halving (down to 64) that fits.
pub fn value_slice(spec: &KernelSpec) -> u32 {
    let tc = uses_tensor_cores(spec);
    let spec = &tile_spec(spec);
    let b = spec.chunk.unwrap_or(32);
    if tc {
        return spec.v.min(tc::MAX_VALUE_SLICE);
    }
    let limit = spec.arch.max_dynamic_shared();
    widest_slice(spec.v, 64, limit, |vs| {
        TilePairLayout::new(spec.k, vs, b).total
    })
}

/// Dynamic shared memory of the path that serves `spec`.
fn shared_bytes(spec: &KernelSpec) -> u32 {
    let b = spec.chunk.unwrap_or(32);
    let (vs, k) = (value_slice(spec), tile_spec(spec).k);
    if uses_tensor_cores(spec) {
        tc::TcLayout::new(k, vs, b).total
    } else {
        TilePairLayout::new(k, vs, b).total
    }
}

/// Threads per CTA of the path that serves `spec`.
pub fn threads(spec: &KernelSpec) -> u32 {
    if uses_tensor_cores(spec) {
        32 * spec.chunk.unwrap_or(32) / 16
    } else {
        fma::THREADS
    }
}

/// The launch for `rows` batch rows and `heads` heads without knowing T: one CTA per (row,
/// head, value slice) walks every query tile. Correct for any T; prefer
/// [`plan`].
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or the grid is too large; spec errors as [`validate`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    spec.check_grid(rows, heads)?;
    Ok(LaunchGeometry {
        grid: [rows, heads, tile_spec(spec).v / value_slice(spec)],
        block: [threads(spec), 1, 1],
        dynamic_smem_bytes: shared_bytes(spec),
    })
}

/// The plan of one launch over T = `size.tokens` tokens per row: one CTA per (row, head,
/// value slice, query tile), the z extent capped at 65535 (whole multiples of the slices;
/// CTAs then take several tiles).
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let one = launch_geometry(spec, size.rows, size.heads)?;
    let geometry = spread_over_tiles(one, size.tokens, spec.chunk.unwrap_or(32));
    let path = KernelPath::tensor_cores_or_fma(uses_tensor_cores(spec));
    let (vs, params) = (value_slice(spec), param_names(spec));
    Ok(KernelPlan::new(spec, path, vs, geometry, params))
}

/// Parameter names in launch order (see the module table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let mut names = vec!["p_q", "p_k", "p_v", "p_o", "p_t", "p_scale"];
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// Emit the parallel forward for `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    if uses_tensor_cores(spec) {
        tc::generate(spec)
    } else {
        fma::generate(spec)
    }
}

/// The parameters of both paths, declared once in the order of the module table.
pub(crate) struct ParallelParams {
    pub q: ParamRef,
    pub k: ParamRef,
    pub v: ParamRef,
    pub o: ParamRef,
    pub t: ParamRef,
    pub scale: ParamRef,
    /// `p_heads` and `p_log2_gamma`, runtime-γ only.
    pub runtime: Option<(ParamRef, ParamRef)>,
}

impl ParallelParams {
    /// Declare the parameters; `runtime_gamma` adds the runtime-γ pair.
    pub(crate) fn declare(kb: &mut KernelBuilder, runtime_gamma: bool) -> Self {
        ParallelParams {
            q: kb.param("p_q", Ty::U64),
            k: kb.param("p_k", Ty::U64),
            v: kb.param("p_v", Ty::U64),
            o: kb.param("p_o", Ty::U64),
            t: kb.param("p_t", Ty::U32),
            scale: kb.param("p_scale", Ty::F32),
            runtime: declare_runtime_gamma(kb, runtime_gamma),
        }
    }
}

/// What both paths open with, after the builder: the parameters, the dynamic shared
/// window and the CTA's coordinates.
pub(crate) struct Opening {
    pub params: ParallelParams,
    pub smem: SharedRef,
    /// log2 γ_h of a named gamma set; `None` for runtime γ.
    pub log2_gammas: Option<Vec<f32>>,
    /// Row b (`ctaid.x`) and head h (`ctaid.y`).
    pub b: Reg,
    pub h: Reg,
    /// Value slice and query tiles (`ctaid.z`).
    pub grid: GridZ,
    /// The thread (`tid.x`).
    pub t: Reg,
}

/// The registers of the CTA's row both paths read: H and log2 γ_h, T, row b's first token,
/// the scale s, the shared window's base and the band table's address.
#[derive(Clone, Copy)]
pub(crate) struct RowRegs {
    pub heads: Reg,
    pub log2_gamma: Reg,
    pub seq_len: Reg,
    pub tok_row: Reg,
    pub scale: Reg,
    pub base: Reg,
    pub band: Reg,
}

impl Opening {
    /// Load the row's registers ([`RowRegs`]), the band table at byte `band` of the window.
    pub(crate) fn row(&self, kb: &mut KernelBuilder, band: u32) -> RowRegs {
        let params = &self.params;
        let named = self.log2_gammas.as_deref();
        let (heads, log2_gamma) =
            decay::heads_and_log2_gamma(kb, params.runtime.as_ref(), named, self.h);
        let seq_len = kb.ld_param(&params.t);
        let tok_row = kb.mul_lo(self.b, seq_len); // first token of row b
        let scale = kb.ld_param(&params.scale);
        let base = kb.shared_addr(&self.smem);
        RowRegs {
            heads,
            log2_gamma,
            seq_len,
            tok_row,
            scale,
            base,
            band: kb.add(base, band),
        }
    }
}

/// Open a parallel forward kernel for `spec`: the builder with `head`'s title, formula and
/// threads ([`kernel_head::open_kernel`]), the parameters, the dynamic shared `window` (bytes,
/// alignment, comment) and the CTA's coordinates for `slices` value slices.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for a bad gamma set.
pub(crate) fn open_kernel(
    spec: &KernelSpec,
    head: (&str, &str, u32),
    window: (u32, u32, &str),
    slices: u32,
) -> GenResult<(KernelBuilder, Opening)> {
    let opened = kernel_head::open_kernel(spec, head, window, ParallelParams::declare)?;
    let mut kb = opened.kb;
    kb.comment("CTA (row b = ctaid.x, head h = ctaid.y, value slice and query tiles from ctaid.z)");
    let (b, h) = cta_row_head(&mut kb);
    let grid = GridZ::new(&mut kb, slices);
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let opening = Opening {
        params: opened.params,
        smem: opened.smem,
        log2_gammas: opened.log2_gammas,
        b,
        h,
        grid,
        t,
    };
    Ok((kb, opening))
}

/// Close the kernel with the CTA's walk over its query tiles of T = `seq_len` tokens
/// (`query_tile(i)` for each, the longest first).
pub(crate) fn walk_query_tiles(
    mut kb: KernelBuilder,
    grid: &GridZ,
    (seq_len, b): (Reg, u32),
    query_tile: impl FnOnce(&mut KernelBuilder, Reg),
) -> GenResult<Kernel> {
    let tiles = tile_count(&mut kb, seq_len, b);
    kb.comment(format!("query tiles of {b} rows, longest first"));
    for_each_owned_tile(&mut kb, grid, tiles, true, query_tile);
    kb.ret();
    kb.finish()
}

/// Emit the key-tile walk of query tile `i`: `body(j, s)` for s = 0, 1, …, i (key tile
/// j = i − s, the diagonal first), stopping before the first tile whose largest decay
/// γ^((s−1)·B+1) is below 2^−150 (it and every later tile would add exact zeros).
pub(crate) fn for_each_key_tile(
    kb: &mut KernelBuilder,
    b: u32,
    i: Reg,
    log2_gamma: Reg,
    mut body: impl FnMut(&mut KernelBuilder, Reg, Reg),
) {
    let exits = |kb: &mut KernelBuilder, s, done| {
        let past = kb.setp(Cmp::Gt, s, i);
        kb.bra_if(past, false, done);
        let vanished = tile_step_vanishes(kb, b, s, log2_gamma);
        kb.bra_if(vanished, false, done);
    };
    for_steps(kb, 0u32, 1u32, exits, |kb, s| {
        let j = kb.sub(i, s);
        body(kb, j, s);
    });
}

/// Store the band table of key step `s` at shared address `band`: for d = t < 2B − 1,
/// `band[d] = γ^n` with n = s·B + d − (B − 1) when n ≥ 0, else 0 (the causal mask).
pub(crate) fn emit_band(
    kb: &mut KernelBuilder,
    band: Reg,
    t: Reg,
    b: u32,
    s: Reg,
    log2_gamma: Reg,
) {
    use crate::dsl::Rounding;
    let in_table = kb.setp(Cmp::Lt, t, 2 * b - 1);
    let sb = kb.mul_lo(s, b);
    let nd = kb.add(sb, t); // n + B − 1
    let causal = kb.setp(Cmp::Ge, nd, b - 1);
    let n = kb.sub(nd, b - 1);
    let n_f = kb.cvt(Ty::F32, n, Some(Rounding::Rn));
    let x = kb.mul(n_f, log2_gamma);
    let g = decay::emit_exp2(kb, x);
    let d = kb.selp(g, 0.0f32, causal);
    let t4 = kb.shl(t, 2u32);
    let at = kb.add(band, t4);
    kb.guarded(in_table, false, |kb| {
        kb.st(Space::Shared, Address::reg(at, 0), d);
    });
}
