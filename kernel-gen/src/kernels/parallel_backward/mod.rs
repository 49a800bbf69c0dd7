//! The parallel retention backward (ARCHITECTURE §1 parallel form, §7), flash-style: no T×T
//! matrix reaches global memory. With D(n, m) = γ^(n−m) (n ≥ m, else 0) and scale s,
//!
//! ```text
//! M = s·(dO Vᵀ) ⊙ D,   P = s·(Q Kᵀ) ⊙ D                                (per row b, head h)
//! dQ = M K,   dK = Mᵀ Q,   dV = Pᵀ dO                     (reference::parallel_backward)
//! ```
//!
//! Four kernels (ops), one generator ([`fma`]): each CTA owns one B-row tile of its output
//! and one slice of its columns, and walks the other side's tiles, accumulating in f32:
//!
//! | op | owns | walks | score (inner dim) | product |
//! |---|---|---|---|---|
//! | `parallel_backward_dq` | query tile i | key tiles j = i, i−1, … | M_ij = s·dO_i V_jᵀ ⊙ D (V) | dQ_i += M_ij K_j |
//! | `parallel_backward_dk` | key tile j | query tiles i = j, j+1, … | M_ij (V) | dK_j += M_ijᵀ Q_i |
//! | `parallel_backward_dv` | key tile j | query tiles i = j, j+1, … | P_ij = s·Q_i K_jᵀ ⊙ D (K) | dV_j += P_ijᵀ dO_i |
//! | `parallel_backward_dlog_gamma` | key tile j | query tiles i = j, j+1, … | M'_ij = s·dO_i V_jᵀ ⊙ nD (V) | g += Σ K_j ⊙ (M'_ijᵀ Q_i) |
//!
//! The last is d log γ = Σ_{n≥m} (n−m) M_nm (Q Kᵀ)_nm = Σ_m k_m · Σ_n (n−m) M_nm q_n: the dK
//! pass with the decay γ^n replaced by its log γ derivative n·γ^n (nD), dotted with the owned
//! keys. Each CTA writes one f32 partial (its threads' sums added in thread order), no
//! atomics; d log γ_h is the sum of head h's partials over rows and grid z
//! ([`dlog_gamma_partials`]).
//!
//! Why three and not one or two: a CTA that owned a key tile and produced dK and dV together
//! would stage Q, dO, K and V tiles at full width at once (at K = 256, V = 512 and B = 32,
//! 200 KiB of f32, past sm_80's shared memory), and dQ from the same CTA needs atomics.
//! Split by output, each CTA holds two score-side tiles, one output-side slice and its
//! accumulator — the forward's footprint — so every K ≤ 256, V ≤ 512 fits sm_80 by slicing
//! the output columns, and every output element has exactly one writer (no atomics, no
//! workspace). The cost is the CPU backward's: dO Vᵀ is formed twice (dQ and dK passes),
//! Q Kᵀ once, so per pair of tiles 2B²(3K + 3V) FLOPs.
//!
//! The walk stops at the first tile step whose largest decay is below 2^−150
//! ([`crate::math::decay_band`]); decays are 2^(n·log2 γ) on relative exponents n ≥ 0.
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses); the three ops
//! share them except for the output's name:
//!
//! | # | name | type | meaning |
//! |---|---|---|---|
//! | 0 | `p_q` | `.u64` | q `[B,T,H,K]` in the spec's dtype |
//! | 1 | `p_k` | `.u64` | k `[B,T,H,K]` in dtype |
//! | 2 | `p_v` | `.u64` | v `[B,T,H,V]` in dtype |
//! | 3 | `p_do` | `.u64` | dO `[B,T,H,V]` in dtype |
//! | 4 | `p_dq` / `p_dk` / `p_dv` | `.u64` | the op's output, in dtype (written, every element) |
//! | 4 | `p_dlog_gamma_partial` | `.u64` | d log γ pass: f32 `[B][H][grid z]` partials (written, every one) |
//! | 5 | `p_t` | `.u32` | T, tokens per row (0 is allowed: nothing runs) |
//! | 6 | `p_scale` | `.f32` | s, applied exactly once (to the owned score tile) |
//! | 7 | `p_heads` | `.u32` | H — runtime-γ variant only |
//! | 8 | `p_log2_gamma` | `.u64` | log2 γ_h, f32 `[H]` — runtime-γ variant only |
//!
//! Grid `(B, H, S·Z)` with S = (padded output dim) / [`value_slice`]: CTA z serves output
//! columns `(z mod S)·ws..` and owned tiles `z/S, z/S + Z, …` (longest walk first), so any
//! Z ≥ 1 is correct; [`plan`] gives Z = ⌈T/B⌉ (capped at the grid
//! limit), [`launch_geometry`] Z = 1. 256 threads, f32 tiles in shared memory (f32, f16 and
//! bf16 inputs alike: 16-bit values are widened as staged, outputs rounded once).
//!
//! Head dims: any 1 ≤ K ≤ 256, 1 ≤ V ≤ 512 and any T; tiles are generated for the padded dims
//! ([`tile_spec`]) and staged with masked loads, so padded columns and rows past T hold exact
//! zeros and only real rows and columns are stored. Dynamic shared memory can exceed 48 KiB:
//! the runtime raises the kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES` attribute first.

pub mod fma;

use crate::error::{check_span, unsupported};
use crate::math::chunk_tiling::check_retnet_heads;
use crate::math::chunk_tiling::{MAX_K, MAX_V, tile_spec};
use crate::math::shared_window::widest_slice;
use crate::math::tile_walk::{TilePairLayout, spread_over_tiles};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{Arch, GenError, GenResult, LaunchGeometry};
use retention_core::Dtype;

/// Tile sizes B (query and key rows per tile) served.
pub const SUPPORTED_TILES: [u32; 2] = [32, 64];
/// The catalog's tile: 32, so the two f32 score-side tiles fit at V = 512.
pub const DEFAULT_TILE: u32 = 32;
/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Which gradient a kernel of the family produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// dQ = M K, one CTA per query tile.
    Dq,
    /// dK = Mᵀ Q, one CTA per key tile.
    Dk,
    /// dV = Pᵀ dO, one CTA per key tile.
    Dv,
    /// d log γ partials, one CTA per key tile: the dK pass with n·γ^n for γ^n, dotted with
    /// the owned keys.
    DlogGamma,
}

impl Pass {
    /// Every pass, in the order the ops are listed.
    pub const ALL: [Pass; 4] = [Pass::Dq, Pass::Dk, Pass::Dv, Pass::DlogGamma];

    /// The pass of `op`, if the family serves it.
    pub const fn of(op: KernelOp) -> Option<Pass> {
        match op {
            KernelOp::ParallelBackwardDq => Some(Pass::Dq),
            KernelOp::ParallelBackwardDk => Some(Pass::Dk),
            KernelOp::ParallelBackwardDv => Some(Pass::Dv),
            KernelOp::ParallelBackwardDlogGamma => Some(Pass::DlogGamma),
            _ => None,
        }
    }

    /// The op of this pass.
    pub const fn op(self) -> KernelOp {
        match self {
            Pass::Dq => KernelOp::ParallelBackwardDq,
            Pass::Dk => KernelOp::ParallelBackwardDk,
            Pass::Dv => KernelOp::ParallelBackwardDv,
            Pass::DlogGamma => KernelOp::ParallelBackwardDlogGamma,
        }
    }

    /// Whether a CTA owns a key tile (and walks query tiles forwards) rather than a query
    /// tile (walking key tiles backwards).
    pub const fn owns_keys(self) -> bool {
        !matches!(self, Pass::Dq)
    }

    /// The output's parameter name.
    pub const fn output_param(self) -> &'static str {
        match self {
            Pass::Dq => "p_dq",
            Pass::Dk => "p_dk",
            Pass::Dv => "p_dv",
            Pass::DlogGamma => "p_dlog_gamma_partial",
        }
    }

    /// (score-side dim, output dim) of `spec`: the inner dim of the score tile (V for dQ and
    /// dK, K for dV) and the columns of the output (K for dQ and dK, V for dV).
    pub const fn dims(self, spec: &KernelSpec) -> (u32, u32) {
        match self {
            Pass::Dq | Pass::Dk | Pass::DlogGamma => (spec.v, spec.k),
            Pass::Dv => (spec.k, spec.v),
        }
    }
}

/// The four specs of the parallel backward of one shape: dQ, dK, dV and d log γ passes.
pub fn passes(
    k: u32,
    v: u32,
    tile: u32,
    gammas: GammaSet,
    dtype: Dtype,
    arch: Arch,
) -> [KernelSpec; 4] {
    Pass::ALL.map(|p| KernelSpec {
        op: p.op(),
        ..KernelSpec::parallel(k, v, tile, gammas, dtype, arch)
    })
}

/// The shared layout of `spec`'s pass: a tile pair ([`TilePairLayout`]: X, Y, Z as the
/// [`fma`] module names them) of the padded dims, its tile and [`value_slice`].
pub fn layout(spec: &KernelSpec, pass: Pass) -> TilePairLayout {
    let (ds, _) = pass.dims(&tile_spec(spec));
    TilePairLayout::new(ds, value_slice(spec), spec.chunk.unwrap_or(DEFAULT_TILE))
}

/// The narrowest output slice the staging serves: B·ws/4 four-element groups cover the 256
/// threads at least once.
const fn min_slice(b: u32) -> u32 {
    4 * THREADS / b
}

/// Output columns one CTA serves: the padded output dim, halved while the f32 tiles overflow
/// the arch's shared memory (down to `min_slice`).
pub fn value_slice(spec: &KernelSpec) -> u32 {
    let Some(pass) = Pass::of(spec.op) else {
        return 0;
    };
    let tile = tile_spec(spec);
    let b = spec.chunk.unwrap_or(DEFAULT_TILE);
    let (ds, wd) = pass.dims(&tile);
    let limit = spec.arch.max_dynamic_shared();
    widest_slice(wd, min_slice(b), limit, |ws| {
        TilePairLayout::new(ds, ws, b).total
    })
}

/// Check that this family serves `spec`.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] for another op, a K or V out of range, an unsupported tile,
/// gamma set or [`TileConfig`], or tiles that overflow the arch's shared memory.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    let Some(pass) = Pass::of(spec.op) else {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "the parallel_backward family emits parallel_backward_{dq,dk,dv} only",
        ));
    };
    check_span(
        "head dim K",
        spec.k,
        MAX_K,
        "parallel backward serves 1 <= K <= 256",
    )?;
    check_span(
        "head dim V",
        spec.v,
        MAX_V,
        "parallel backward serves 1 <= V <= 512",
    )?;
    let Some(b) = spec.chunk else {
        return Err(unsupported(
            "chunk",
            "none",
            "parallel backward needs a tile size (the chunk field)",
        ));
    };
    if !SUPPORTED_TILES.contains(&b) {
        return Err(unsupported(
            "chunk",
            b,
            "parallel backward serves tiles B in {32, 64}",
        ));
    }
    check_retnet_heads(spec.gammas)?;
    if spec.tile != TileConfig::default() {
        return Err(unsupported(
            "tile",
            format!("{:?}", spec.tile),
            "parallel backward uses the default tile config",
        ));
    }
    let bytes = layout(spec, pass).total;
    if bytes > spec.arch.max_dynamic_shared() {
        return Err(unsupported(
            "shared memory",
            bytes,
            format!(
                "{} allows at most {} bytes per CTA; use tile 32",
                spec.arch,
                spec.arch.max_dynamic_shared()
            ),
        ));
    }
    Ok(())
}

/// Output slices of `spec` (padded output dim / [`value_slice`]).
fn slices(spec: &KernelSpec) -> u32 {
    let pass = Pass::of(spec.op).unwrap_or(Pass::Dq);
    pass.dims(&tile_spec(spec)).1 / value_slice(spec)
}

/// The launch for `rows` batch rows and `heads` heads without knowing T: one CTA per (row,
/// head, slice) walks every owned tile. Correct for any T; prefer
/// [`plan`].
///
/// # Errors
/// [`GenError::Launch`] when rows or heads is zero, heads differs from a named gamma set's,
/// or the grid is too large; spec errors as [`validate`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    spec.check_grid(rows, heads)?;
    let pass = Pass::of(spec.op).unwrap_or(Pass::Dq);
    Ok(LaunchGeometry {
        grid: [rows, heads, slices(spec)],
        block: [THREADS, 1, 1],
        dynamic_smem_bytes: layout(spec, pass).total,
    })
}

/// f32 partials the d log γ pass writes on `geometry`: one per CTA, `[rows][H][grid z]`
/// (the pass's output; d log γ_h is the sum of head h's).
pub fn dlog_gamma_partials(geometry: &LaunchGeometry) -> usize {
    geometry.grid.iter().map(|&g| g as usize).product()
}

/// The plan of one launch over T = `size.tokens` tokens per row: one CTA per (row, head,
/// slice, owned tile), the z extent capped at 65535 (whole multiples of the slices; CTAs
/// then own several tiles); the FMA path; the d log γ
/// pass's workspace is its partials ([`dlog_gamma_partials`]), the other passes have none.
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let one = launch_geometry(spec, size.rows, size.heads)?;
    let geometry = spread_over_tiles(one, size.tokens, spec.chunk.unwrap_or(DEFAULT_TILE));
    let workspace_bytes = if spec.op == KernelOp::ParallelBackwardDlogGamma {
        4 * dlog_gamma_partials(&geometry) as u64
    } else {
        0
    };
    Ok(KernelPlan::new(
        spec,
        KernelPath::Fma,
        value_slice(spec),
        geometry,
        param_names(spec),
    )
    .with_workspace(workspace_bytes))
}

/// Parameter names in launch order (see the module table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let out = Pass::of(spec.op).map_or("p_dq", Pass::output_param);
    let mut names = vec!["p_q", "p_k", "p_v", "p_do", out, "p_t", "p_scale"];
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// Emit the kernel of `spec` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] as [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    let pass = Pass::of(spec.op).unwrap_or(Pass::Dq);
    fma::generate(spec, pass)
}
