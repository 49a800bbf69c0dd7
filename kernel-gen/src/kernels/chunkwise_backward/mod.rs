//! The chunkwise retention backward (ARCHITECTURE §7) as three one-pass kernels, each one CTA
//! per (row b, head h, column slice z) walking the sequence in chunks of C with an f32 state
//! in shared memory — nothing is saved by the forward and no state goes through global memory
//! (the recompute choice: 0 bytes per token kept for the backward, against fla's per-chunk
//! states). With M = (s·dO Vᵀ) ⊙ D, A = Q Kᵀ ⊙ D, ξ_i = γ^(i+1), ζ_i = γ^(L−1−i), R_c the
//! state after chunk c (R_−1 = H0) and G_c = dL/dR_c (G_last = dH_T):
//!
//! ```text
//! dq (forward walk, S = Rᵀ [V,K]):  dQ = M K + s (dO ⊙ ξ) S_{c−1};   S_c = γ^L S_{c−1} + (V ⊙ ζ)ᵀ K
//! dk (reverse walk, S = Gᵀ [V,K]):  dK = Mᵀ Q + (V ⊙ ζ) S_c;         S_{c−1} = γ^L S_c + s (dO ⊙ ξ)ᵀ Q
//! dv (reverse walk, S = G  [K,V]):  dV = s Aᵀ dO + (K ⊙ ζ) S_c;      S_{c−1} = γ^L S_c + s (Q ⊙ ξ)ᵀ dO;
//!                                   dH0 = S_{−1}
//! ```
//!
//! All three are one shape (the [`Role`] table): out_i = λ_i x_i·S + Σ_j m(i,j) (x_i·y_j) w_j
//! with the state S `[P, N]` updated by S ← γ^L S + Σ_j u_j y_jᵀ w_j after it is read, where
//! (x, y, w, P, N) = (s·dO, V, K, V, K) for dq, (V, s·dO, Q, V, K) for dk and (K, s·Q, dO, K, V)
//! for dv; the forward walk masks j ≤ i with γ^(i−j), λ = ξ, u = ζ; the reverse walk masks
//! j ≥ i with γ^(j−i), λ = ζ, u = ξ. Chunks keep the forward's alignment (the last one may be
//! short); the gradients do not depend on C, so any user chunk is served by a kernel chunk
//! in [`SUPPORTED_CHUNKS`].
//!
//! Kernel parameters, in launch order (pointers are `.u64` device addresses; token-major
//! `[B,T,H,·]` tensors in the spec's dtype, states `[B,H,K,V]` f32):
//!
//! | # | name           | meaning                                                       |
//! |---|----------------|---------------------------------------------------------------|
//! | 0 | `p_q`          | q (dk, dv read it)                                            |
//! | 1 | `p_k`          | k (dq, dv)                                                    |
//! | 2 | `p_v`          | v (dq, dk)                                                    |
//! | 3 | `p_do`         | dO `[B,T,H,V]`                                                |
//! | 4 | `p_grad`       | dq, dk `[B,T,H,K]` or dv `[B,T,H,V]` (written, dtype)         |
//! | 5 | `p_state`      | dq: H0; dk, dv: dH_T; 0 for none                              |
//! | 6 | `p_dh0`        | dv only: dH0 (written), or 0                                  |
//! | 7 | `p_h0`         | dv only: H0 for d log γ's T⟨H0, dH0⟩, or 0                    |
//! | 8 | `p_dlog_gamma` | f32 `[B,H,slices,256]` d log γ partials (written), or 0       |
//! | 9 | `p_t`          | `.u32` T; varlen ops: `p_cu_seqlens`, u32 `[N+1]` (device)    |
//! | 10 | `p_scale`     | `.f32` s                                                      |
//! | 11 | `p_heads`, `p_log2_gamma` | runtime-γ variant only (as the forward's)         |
//!
//! The varlen ops (`chunkwise_varlen_bwd_{dq,dk,dv}`) are the same kernels over a packed batch
//! `[1, ΣT, H, ·]`: the grid's x axis walks the N sequences, each CTA reading its token range
//! from `cu_seqlens` as the varlen forward does, with per-sequence H0, dH_T and dH0
//! `[N,H,K,V]` and d log γ weights from its own sequence's length.
//!
//! d log γ: see the `dlog_gamma` module's identity; each kernel adds its terms from the f32
//! gradients it holds and writes per-thread partials, which the caller sums per head in f64.
//!
//! Shared memory (f32): the state `[P][Ns]`, xᵀ and yᵀ in blocks of 64 of the P rows
//! (`[64][C]` each), w `[C][Ns]`, the raw then masked scores `[C][C]` (stored `[j][i]`), the
//! state term `[C][Ns]` and the decay table γ^d, d = 0..=C. Ns, the columns of N one CTA
//! serves, is the widest of 64 and 32 that fits the arch ([`column_slice`]); the grid's z axis
//! walks the N/Ns slices, each recomputing the chunk's scores. Head dims: any 1 ≤ K ≤ 256,
//! 1 ≤ V ≤ 512 on tiles padded to the next power of two (at least 64) with masked tails, as
//! the forward. Every staged row past a partial chunk or a real dim is zero-filled, so no
//! shared byte is read unwritten; inputs of every dtype are widened to f32 as staged and
//! every product accumulates in f32 (the FMA path, 256 threads).

mod dlog_gamma;
pub mod fma;
pub mod tc;
pub mod tc_plan;

use crate::dsl::{KernelBuilder, Reg, Ty};
use crate::error::unsupported;
use crate::math::chunk_tiling::{self, padded_dim};
use crate::math::shared_window::{decay_table_bytes, f32_arrays};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{GammaSet, KernelOp, KernelSpec, TileConfig};
use crate::{GenError, GenResult, LaunchGeometry};

/// Kernel chunk lengths served (the forward catalog's chunks that hold whole on chip).
pub const SUPPORTED_CHUNKS: [u32; 2] = [32, 64];
/// The three ops of the family, in launch order (dq, dk, dv).
pub const OPS: [KernelOp; 3] = [
    KernelOp::ChunkwiseBackwardDq,
    KernelOp::ChunkwiseBackwardDk,
    KernelOp::ChunkwiseBackwardDv,
];
/// The varlen ops, in the same order as [`OPS`].
pub const VARLEN_OPS: [KernelOp; 3] = [
    KernelOp::ChunkwiseVarlenBackwardDq,
    KernelOp::ChunkwiseVarlenBackwardDk,
    KernelOp::ChunkwiseVarlenBackwardDv,
];
/// Rows of P staged per block of xᵀ and yᵀ.
pub const P_BLOCK: u32 = 64;
/// Threads per CTA.
pub const THREADS: u32 = 256;

/// Which gradient a kernel computes and how (the module docs' table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// dQ, forward walk.
    Dq,
    /// dK, reverse walk.
    Dk,
    /// dV and dH0, reverse walk.
    Dv,
}

impl Role {
    /// The role of a backward op.
    pub fn of(op: KernelOp) -> Option<Role> {
        match op {
            KernelOp::ChunkwiseBackwardDq | KernelOp::ChunkwiseVarlenBackwardDq => Some(Role::Dq),
            KernelOp::ChunkwiseBackwardDk | KernelOp::ChunkwiseVarlenBackwardDk => Some(Role::Dk),
            KernelOp::ChunkwiseBackwardDv | KernelOp::ChunkwiseVarlenBackwardDv => Some(Role::Dv),
            _ => None,
        }
    }

    /// Whether the kernel walks chunks from the last to the first.
    pub const fn reverse(self) -> bool {
        !matches!(self, Role::Dq)
    }

    /// (P, N): the state's rows and the output's columns, real dims.
    pub const fn dims(self, k: u32, v: u32) -> (u32, u32) {
        match self {
            Role::Dq | Role::Dk => (v, k),
            Role::Dv => (k, v),
        }
    }

    /// Whether the state S is the transpose of the `[K,V]` state in global memory.
    pub const fn transposed(self) -> bool {
        !matches!(self, Role::Dv)
    }
}

/// Byte offsets of the f32 arrays in the dynamic shared window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackwardLayout {
    /// S `[P][Ns]`.
    pub s: u32,
    /// xᵀ block `[64][C]`.
    pub xt: u32,
    /// yᵀ block `[64][C]`.
    pub yt: u32,
    /// w `[C][Ns]`.
    pub w: u32,
    /// Scores `[C][C]`, `[j][i]`.
    pub sc: u32,
    /// State term `[C][Ns]`.
    pub os: u32,
    /// γ^d, d = 0..=C.
    pub decay: u32,
    /// Total bytes.
    pub total: u32,
}

impl BackwardLayout {
    /// The layout for padded state rows `p`, column slice `ns` and chunk `c`.
    pub const fn new(p: u32, ns: u32, c: u32) -> Self {
        let lens = [p * ns, P_BLOCK * c, P_BLOCK * c, c * ns, c * c, c * ns];
        let ([s, xt, yt, w, sc, os], decay) = f32_arrays(0, lens);
        let total = decay + decay_table_bytes(c);
        BackwardLayout {
            s,
            xt,
            yt,
            w,
            sc,
            os,
            decay,
            total,
        }
    }
}

/// The padded (P, N) of `spec` (checked by the caller).
pub fn padded_dims(spec: &KernelSpec) -> (u32, u32) {
    let role = Role::of(spec.op).unwrap_or(Role::Dq);
    let (p, n) = role.dims(spec.k, spec.v);
    (padded_dim(p), padded_dim(n))
}

/// Columns of N one CTA serves: 64 (or all of N when narrower) when the layout fits the
/// arch's shared memory, else 32.
pub fn column_slice(spec: &KernelSpec) -> u32 {
    if tc_plan::is_tensor_core(spec) {
        return tc_plan::TC_SLICE;
    }
    let (p, n) = padded_dims(spec);
    let c = spec.chunk.unwrap_or(SUPPORTED_CHUNKS[0]);
    let wide = n.min(64);
    if BackwardLayout::new(p, wide, c).total <= spec.arch.max_dynamic_shared() {
        wide
    } else {
        32
    }
}

/// The shared layout of `spec`.
pub fn layout(spec: &KernelSpec) -> BackwardLayout {
    let (p, _) = padded_dims(spec);
    BackwardLayout::new(p, column_slice(spec), spec.chunk.unwrap_or_default())
}

/// Dynamic shared memory of the kernel serving `spec` (FMA or tensor-core layout).
pub fn shared_bytes(spec: &KernelSpec) -> u32 {
    if tc_plan::is_tensor_core(spec) {
        tc_plan::tc_layout(spec).total
    } else {
        layout(spec).total
    }
}

/// Check that this family serves `spec`: a backward op, K ≤ 256, V ≤ 512, C in
/// [`SUPPORTED_CHUNKS`], the default tile (or [`tc_plan::TC_TILE`] where [`tc_plan::check`] holds), and a layout within the arch's shared memory.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the first field not served.
pub fn validate(spec: &KernelSpec) -> Result<(), GenError> {
    if Role::of(spec.op).is_none() {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "the chunkwise_backward family emits chunkwise_{,varlen_}bwd_{dq,dk,dv} only",
        ));
    }
    chunk_tiling::check_dims(spec)?;
    let c = spec.chunk.unwrap_or_default();
    if !SUPPORTED_CHUNKS.contains(&c) {
        return Err(unsupported(
            "chunk",
            c.to_string(),
            "the chunkwise backward's kernels serve C in {32, 64} (gradients do not depend on C)",
        ));
    }
    if tc_plan::is_tensor_core(spec) {
        tc_plan::check(spec)?;
    } else if spec.tile != TileConfig::default() {
        return Err(unsupported(
            "tile",
            format!("{:?}", spec.tile),
            "the chunkwise backward uses the default tile (256 threads) or tc_plan::TC_TILE",
        ));
    }
    if let GammaSet::Retnet { heads } = spec.gammas
        && (heads == 0 || heads > 64)
    {
        return Err(unsupported(
            "gammas",
            spec.gammas.name(),
            "a named gamma set has 1..=64 heads",
        ));
    }
    let need = shared_bytes(spec);
    let limit = spec.arch.max_dynamic_shared();
    if need > limit {
        return Err(unsupported(
            "chunk",
            c.to_string(),
            format!("needs {need} bytes of shared memory, the arch allows {limit}"),
        ));
    }
    Ok(())
}

/// The kernel that serves `spec`'s (op, K, V, C, γ, dtype, arch) best: its tensor-core
/// kernel where that validates (f16/bf16, even dims, P ≤ [`tc_plan::TC_MAX_P`]), else the
/// FMA kernel (the default tile).
pub fn preferred(spec: &KernelSpec) -> KernelSpec {
    let tc = tc_plan::tensor_core_spec(spec);
    if validate(&tc).is_ok() {
        tc
    } else {
        KernelSpec {
            tile: TileConfig::default(),
            ..*spec
        }
    }
}

/// Parameter names in launch order (the module docs' table).
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    let mut names = vec!["p_q", "p_k", "p_v", "p_do", "p_grad", "p_state"];
    if Role::of(spec.op) == Some(Role::Dv) {
        names.extend(["p_dh0", "p_h0"]);
    }
    let lengths = if spec.op.is_varlen() {
        "p_cu_seqlens"
    } else {
        "p_t"
    };
    names.extend(["p_dlog_gamma", lengths, "p_scale"]);
    if spec.gammas == GammaSet::Runtime {
        names.extend(["p_heads", "p_log2_gamma"]);
    }
    names
}

/// The launch for `rows` batch rows (varlen: sequences) and `heads` heads: grid
/// `(B, H, N/Ns)`, 256 threads.
///
/// # Errors
/// As [`validate`]; [`GenError::Launch`] for a grid the spec cannot take.
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    validate(spec)?;
    spec.check_grid(rows, heads)?;
    let (_, n) = padded_dims(spec);
    Ok(LaunchGeometry {
        grid: [rows, heads, n / column_slice(spec)],
        block: [THREADS, 1, 1],
        dynamic_smem_bytes: shared_bytes(spec),
    })
}

/// The plan of one launch: the tensor-core path for a [`tc_plan::TC_TILE`] spec, else FMA; nothing saved by the forward (states are
/// recomputed), and the workspace is the d log γ partials, one f32 per thread of every CTA
/// (`p_dlog_gamma`, needed only when d log γ is asked for).
///
/// # Errors
/// As [`launch_geometry`].
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let geometry = launch_geometry(spec, size.rows, size.heads)?;
    let ctas: u64 = geometry.grid.iter().map(|&g| u64::from(g)).product();
    Ok(KernelPlan::new(
        spec,
        KernelPath::tensor_cores_or_fma(tc_plan::is_tensor_core(spec)),
        column_slice(spec),
        geometry,
        param_names(spec),
    )
    .with_workspace(ctas * u64::from(THREADS) * 4))
}

/// Emit the kernel for `spec` (validated first).
///
/// # Errors
/// As [`validate`]; [`GenError::Dsl`] on a generator bug.
pub fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    validate(spec)?;
    let role = Role::of(spec.op).unwrap_or(Role::Dq);
    if tc_plan::is_tensor_core(spec) {
        return tc::generate(spec, role);
    }
    fma::generate(spec, role)
}

/// The chunk walk both generators share: chunks of `c` tokens over `seq_len` from token
/// `tok0`, the last chunk first when `role` walks backwards (`t_last` = max(T, 1) − 1 locates
/// it); `body(kb, (tok_c, len, c0))` emits one chunk (its first token, its length L ≤ C and
/// its offset in the sequence).
pub(super) fn walk_chunks(
    kb: &mut KernelBuilder,
    (role, c): (Role, u32),
    (tok0, seq_len, t_last): (Reg, Reg, Reg),
    body: impl FnOnce(&mut KernelBuilder, (Reg, Reg, Reg)),
) {
    // The last chunk's first token: ((max(T, 1) − 1) div C)·C.
    let last = kb.shr(t_last, c.trailing_zeros());
    let last = kb.shl(last, c.trailing_zeros());
    kb.comment(format!(
        "walk the sequence in chunks of {c}, {}",
        if role.reverse() {
            "last chunk first"
        } else {
            "first chunk first"
        }
    ));
    kb.for_range(0u32, seq_len, c, |kb, i| {
        let c0 = if role.reverse() {
            kb.sub(last, i)
        } else {
            kb.mov(Ty::U32, i)
        };
        let remaining = kb.sub(seq_len, c0);
        let len = kb.min(remaining, c);
        let tok_c = kb.add(tok0, c0);
        body(kb, (tok_c, len, c0));
    });
}
