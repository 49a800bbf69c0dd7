//! `KernelSpec` (ARCHITECTURE §2): what a kernel computes and for which target, with a stable hash
//! that names the PTX entry and keys every cache.

use std::fmt;

use retention_core::{Dtype, Gammas};
use serde::{Deserialize, Serialize};

use crate::error::{check_span, unsupported};
use crate::{Arch, GenError};

/// The parallel forward's catalog tile for `dtype`: 64 on tensor cores (4 warps of 16 query
/// rows), 32 on the FMA path (whose f32 tiles must fit shared memory at K = 256).
pub const fn default_parallel_tile(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F32 => 32,
        _ => 64,
    }
}

/// Which retention computation a kernel performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelOp {
    /// One recurrent step for a batch of rows, each on its own state slot.
    Decode,
    /// The chunkwise forward over whole sequences: o and optionally the final state.
    Chunkwise,
    /// The chunkwise forward over a packed variable-length batch (`cu_seqlens`).
    ChunkwiseVarlen,
    /// The softmax-attention KV-cache decode baseline, split pass: partial (m, l, o) per
    /// context split (or o itself when there is one split).
    AttentionDecode,
    /// The softmax-attention KV-cache decode baseline, combine pass: merges the splits.
    AttentionCombine,
    /// The parallel forward, flash-style (tile size in `chunk`; no initial or final state).
    Parallel,
    /// Phase 1 of the two-phase chunkwise forward: every full segment's local end state
    /// (from zero), f32, into a workspace (the two-phase family, `kernels::two_phase`).
    ChunkStates,
    /// Phase 2 of the two-phase chunkwise forward: each segment's initial state folded from
    /// H0 and the workspace, then the chunk loop over the segment (the chunkwise family's segmented mode).
    ChunkwiseSegmented,
    /// The gated MSR epilogue y = RMSNorm_head(o) ⊙ swish(g), per (token, head) row (the
    /// epilogue family, `kernels::epilogue`).
    Epilogue,
    /// The epilogue's backward: do and dg from dy.
    EpilogueBackward,
    /// Chunkwise backward, dQ: a forward walk over chunks carrying the state Rᵀ (the
    /// `chunkwise_backward` family, `kernels::chunkwise_backward`).
    ChunkwiseBackwardDq,
    /// Chunkwise backward, dK: a reverse walk over chunks carrying the adjoint dRᵀ.
    ChunkwiseBackwardDk,
    /// Chunkwise backward, dV and dH0: a reverse walk over chunks carrying the adjoint dR.
    ChunkwiseBackwardDv,
    /// [`KernelOp::ChunkwiseBackwardDq`] over a packed variable-length batch (`cu_seqlens`).
    ChunkwiseVarlenBackwardDq,
    /// [`KernelOp::ChunkwiseBackwardDk`] over a packed variable-length batch.
    ChunkwiseVarlenBackwardDk,
    /// [`KernelOp::ChunkwiseBackwardDv`] over a packed variable-length batch (dH0 `[N,H,K,V]`).
    ChunkwiseVarlenBackwardDv,
    /// Parallel backward, dQ pass: one CTA per query tile, dQ = M K over key tiles ≤ it
    /// (M = s·(dO Vᵀ) ⊙ D; the `parallel_backward` family, tile size in `chunk`).
    ParallelBackwardDq,
    /// Parallel backward, dK pass: one CTA per key tile, dK = Mᵀ Q over query tiles ≥ it.
    ParallelBackwardDk,
    /// Parallel backward, dV pass: one CTA per key tile, dV = Pᵀ dO over query tiles ≥ it
    /// (P = s·(Q Kᵀ) ⊙ D).
    ParallelBackwardDv,
    /// Parallel backward, d log γ pass: one CTA per key tile writes its partial of
    /// Σ_{n≥m} (n−m) M_nm (Q Kᵀ)_nm; the partials sum to d log γ_h.
    ParallelBackwardDlogGamma,
    /// RMSNorm with a gain over the model width d, one warp per row (the `layer_ops`
    /// family, `kernels::layer_ops`; d in the spec's `v`).
    RmsNorm,
    /// The FFN's tanh-form GELU, element-wise in place (the `layer_ops` family).
    Gelu,
    /// A strided copy of rows, bit-exact (the `layer_ops` family): projections split into
    /// their parts, a KV cache's row written at a position.
    CopyRows,
    /// The per-head sum of f32 partials `[R, H, M]` into `[H]` (the `head_sum` family, how
    /// the chunkwise backward's d log γ partials are reduced on the device).
    HeadSum,
    /// The f32 state entering every chunk, folded from H0 and the chunk-local states of the
    /// two-phase forward's phase 1 run with one chunk per segment (the `boundary_states`
    /// family: what `chunkwise_for_training` keeps).
    ChunkBoundaryStates,
}

impl KernelOp {
    /// Every op.
    pub const ALL: [KernelOp; 25] = [
        KernelOp::Decode,
        KernelOp::Chunkwise,
        KernelOp::ChunkwiseVarlen,
        KernelOp::AttentionDecode,
        KernelOp::AttentionCombine,
        KernelOp::Parallel,
        KernelOp::ChunkStates,
        KernelOp::ChunkwiseSegmented,
        KernelOp::Epilogue,
        KernelOp::EpilogueBackward,
        KernelOp::ChunkwiseBackwardDq,
        KernelOp::ChunkwiseBackwardDk,
        KernelOp::ChunkwiseBackwardDv,
        KernelOp::ChunkwiseVarlenBackwardDq,
        KernelOp::ChunkwiseVarlenBackwardDk,
        KernelOp::ChunkwiseVarlenBackwardDv,
        KernelOp::ParallelBackwardDq,
        KernelOp::ParallelBackwardDk,
        KernelOp::ParallelBackwardDv,
        KernelOp::ParallelBackwardDlogGamma,
        KernelOp::RmsNorm,
        KernelOp::Gelu,
        KernelOp::CopyRows,
        KernelOp::HeadSum,
        KernelOp::ChunkBoundaryStates,
    ];

    /// Lower-case name, used in entry names.
    pub const fn name(self) -> &'static str {
        match self {
            KernelOp::Decode => "decode",
            KernelOp::Chunkwise => "chunkwise",
            KernelOp::ChunkwiseVarlen => "chunkwise_varlen",
            KernelOp::AttentionDecode => "attention_decode",
            KernelOp::AttentionCombine => "attention_combine",
            KernelOp::Parallel => "parallel",
            KernelOp::ChunkStates => "chunk_states",
            KernelOp::ChunkwiseSegmented => "chunkwise_segmented",
            KernelOp::Epilogue => "epilogue",
            KernelOp::EpilogueBackward => "epilogue_backward",
            KernelOp::ChunkwiseBackwardDq => "chunkwise_bwd_dq",
            KernelOp::ChunkwiseBackwardDk => "chunkwise_bwd_dk",
            KernelOp::ChunkwiseBackwardDv => "chunkwise_bwd_dv",
            KernelOp::ChunkwiseVarlenBackwardDq => "chunkwise_varlen_bwd_dq",
            KernelOp::ChunkwiseVarlenBackwardDk => "chunkwise_varlen_bwd_dk",
            KernelOp::ChunkwiseVarlenBackwardDv => "chunkwise_varlen_bwd_dv",
            KernelOp::ParallelBackwardDq => "parallel_backward_dq",
            KernelOp::ParallelBackwardDk => "parallel_backward_dk",
            KernelOp::ParallelBackwardDv => "parallel_backward_dv",
            KernelOp::ParallelBackwardDlogGamma => "parallel_backward_dlog_gamma",
            KernelOp::RmsNorm => "rms_norm",
            KernelOp::Gelu => "gelu",
            KernelOp::CopyRows => "copy_rows",
            KernelOp::HeadSum => "head_sum",
            KernelOp::ChunkBoundaryStates => "chunk_boundary_states",
        }
    }

    /// Whether the op walks a packed variable-length batch: its sequences' token ranges come
    /// from a device `cu_seqlens` (`p_cu_seqlens`, u32 `[N+1]`) instead of `p_t`.
    pub const fn is_varlen(self) -> bool {
        matches!(
            self,
            KernelOp::ChunkwiseVarlen
                | KernelOp::ChunkwiseVarlenBackwardDq
                | KernelOp::ChunkwiseVarlenBackwardDk
                | KernelOp::ChunkwiseVarlenBackwardDv
        )
    }
}

/// Where the per-head decays come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GammaSet {
    /// `Gammas::retnet(heads)`: H is fixed and every log2 γ_h is baked in as an immediate.
    Retnet {
        /// Number of heads.
        heads: u32,
    },
    /// Any decays: H is a launch parameter and log2 γ_h is read from an f32 buffer.
    Runtime,
}

impl GammaSet {
    /// The set's name in entry slugs (`retnet8`, `runtime`).
    pub fn name(self) -> String {
        match self {
            GammaSet::Retnet { heads } => format!("retnet{heads}"),
            GammaSet::Runtime => "runtime".into(),
        }
    }

    /// log2 γ_h of every head of a named set, rounded once from f64 to f32 (never γ itself in
    /// 16 bits, PITFALLS #5); `None` for runtime γ.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] when the set has no valid RetNet decays.
    pub fn log2_gammas(self) -> Result<Option<Vec<f32>>, GenError> {
        match self {
            GammaSet::Runtime => Ok(None),
            GammaSet::Retnet { heads } => {
                let g = Gammas::retnet(heads as usize).map_err(|e| GenError::UnsupportedSpec {
                    what: "gamma set",
                    value: self.name(),
                    reason: e.to_string(),
                })?;
                Ok(Some((0..g.len()).map(|h| g.log2(h) as f32).collect()))
            }
        }
    }
}

/// How a kernel maps work onto a CTA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TileConfig {
    /// Threads per CTA.
    pub threads: u32,
    /// State rows each thread streams per loop step (loads in flight per thread).
    pub rows_per_step: u32,
}

impl TileConfig {
    /// `threads` per CTA, each streaming `rows_per_step` rows per loop step.
    pub const fn new(threads: u32, rows_per_step: u32) -> Self {
        TileConfig {
            threads,
            rows_per_step,
        }
    }
}

impl Default for TileConfig {
    fn default() -> Self {
        TileConfig::new(256, 4)
    }
}

/// Serde for `retention_core::Dtype` (which stays serde-free) as its lower-case name.
mod dtype_serde {
    use retention_core::Dtype;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Dtype, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Dtype, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything that determines a kernel's PTX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KernelSpec {
    /// The computation.
    pub op: KernelOp,
    /// Key/query head dimension.
    pub k: u32,
    /// Value head dimension.
    pub v: u32,
    /// Chunk length for chunkwise kernels (the tile rows for parallel); for decode `None` (the
    /// default value slice) or the value slice width of a wider variant.
    pub chunk: Option<u32>,
    /// Decays.
    pub gammas: GammaSet,
    /// Element type of q, k, v and o (state is always f32).
    #[serde(with = "dtype_serde")]
    pub dtype: Dtype,
    /// Target.
    pub arch: Arch,
    /// CTA mapping.
    pub tile: TileConfig,
}

/// 64-bit FNV-1a: tiny, specified, and stable across Rust versions (unlike `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl KernelSpec {
    /// The fields every constructor starts from: `op` at K = `k`, V = `v` in `dtype` for
    /// `arch`, no chunk, runtime γ and the default tile.
    fn base(op: KernelOp, (k, v): (u32, u32), dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            op,
            k,
            v,
            chunk: None,
            gammas: GammaSet::Runtime,
            dtype,
            arch,
            tile: TileConfig::default(),
        }
    }

    /// The same spec for another op (the other ops over chunks — varlen, the two-phase
    /// phases, the chunkwise backward — are a [`Self::chunkwise`] spec with their op).
    pub fn with_op(self, op: KernelOp) -> Self {
        KernelSpec { op, ..self }
    }

    /// A decode-step spec with the default tile.
    pub fn decode(k: u32, v: u32, gammas: GammaSet, dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            gammas,
            ..Self::base(KernelOp::Decode, (k, v), dtype, arch)
        }
    }

    /// A chunkwise-forward spec with chunk length `chunk` and the default tile.
    pub fn chunkwise(
        k: u32,
        v: u32,
        chunk: u32,
        gammas: GammaSet,
        dtype: Dtype,
        arch: Arch,
    ) -> Self {
        KernelSpec {
            chunk: Some(chunk),
            gammas,
            ..Self::base(KernelOp::Chunkwise, (k, v), dtype, arch)
        }
    }

    /// A softmax-attention KV-cache decode spec (the split pass; [`Self::attention_combine`]
    /// gives its combine pass): query/key dim `k`, value dim `v`. Attention has no decays, so
    /// the gamma set is [`GammaSet::Runtime`] (H is a launch dimension, nothing is baked in).
    /// The tile is 512 threads reading 2 tokens per lane group per step, the fastest of those
    /// measured on an H100.
    pub fn attention_decode(k: u32, v: u32, dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            tile: TileConfig::new(512, 2),
            ..Self::base(KernelOp::AttentionDecode, (k, v), dtype, arch)
        }
    }

    /// The combine pass that goes with an attention split-pass spec (same fields, its own op).
    pub fn attention_combine(&self) -> Self {
        self.with_op(KernelOp::AttentionCombine)
    }

    /// A parallel-forward spec whose query and key tiles have `tile` rows (stored in the
    /// `chunk` field; the parallel family's default tile is the catalog's choice).
    pub fn parallel(k: u32, v: u32, tile: u32, gammas: GammaSet, dtype: Dtype, arch: Arch) -> Self {
        Self::chunkwise(k, v, tile, gammas, dtype, arch).with_op(KernelOp::Parallel)
    }

    /// The parallel-forward spec with the catalog's tile for `dtype`
    /// ([`default_parallel_tile`]).
    pub fn parallel_default(k: u32, v: u32, gammas: GammaSet, dtype: Dtype, arch: Arch) -> Self {
        Self::parallel(k, v, default_parallel_tile(dtype), gammas, dtype, arch)
    }

    /// The gated MSR epilogue's forward over rows of V entries (K = V: it has no key dim;
    /// runtime γ: no decays; 4 rows per 128-thread CTA). [`Self::epilogue_backward`] gives
    /// its backward.
    pub fn epilogue(v: u32, dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            tile: TileConfig::new(128, 1),
            ..Self::base(KernelOp::Epilogue, (v, v), dtype, arch)
        }
    }

    /// RMSNorm with a gain over rows of width `d` (in `k` = `v`; runtime γ: no decays; one
    /// warp per row, 4 rows per 128-thread CTA).
    pub fn rms_norm(d: u32, dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            op: KernelOp::RmsNorm,
            ..Self::epilogue(d, dtype, arch)
        }
    }

    /// The tanh-form GELU in place over a flat tensor whose length is a multiple of `align`
    /// (4: one vector access per thread, or 1: scalar accesses; in `k` = `v`), 256 threads
    /// of 4 elements each per CTA.
    pub fn gelu(align: u32, dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            op: KernelOp::Gelu,
            tile: TileConfig {
                threads: 256,
                rows_per_step: 1,
            },
            ..Self::epilogue(align, dtype, arch)
        }
    }

    /// The strided row copy in `dtype` (`k` = `v` = 1), 256 threads of one element each.
    pub fn copy_rows(dtype: Dtype, arch: Arch) -> Self {
        KernelSpec {
            op: KernelOp::CopyRows,
            ..Self::gelu(1, dtype, arch)
        }
    }

    /// The backward that goes with an epilogue spec (same fields, its own op).
    pub fn epilogue_backward(&self) -> Self {
        self.with_op(KernelOp::EpilogueBackward)
    }

    /// The per-head sum of f32 partials for `arch` (K = V = 1, no chunk, runtime γ, f32, the
    /// default tile): the one `head_sum` kernel of an arch.
    pub fn head_sum(arch: Arch) -> Self {
        KernelSpec {
            op: KernelOp::HeadSum,
            k: 1,
            v: 1,
            chunk: None,
            gammas: GammaSet::Runtime,
            dtype: Dtype::F32,
            arch,
            tile: TileConfig::default(),
        }
    }

    /// The fold of the chunk-entering states for a chunkwise forward of (K, V, chunk, γ set)
    /// on `arch` (f32, the default tile).
    pub fn boundary_states(k: u32, v: u32, chunk: u32, gammas: GammaSet, arch: Arch) -> Self {
        KernelSpec {
            op: KernelOp::ChunkBoundaryStates,
            ..Self::chunkwise(k, v, chunk, gammas, Dtype::F32, arch)
        }
    }

    /// The canonical text every field is hashed from. Changing it renames every entry, so it
    /// only ever gains fields.
    pub fn canonical(&self) -> String {
        let chunk = self
            .chunk
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        let (op, k, v, gammas, dtype, arch) = self.names();
        let TileConfig {
            threads,
            rows_per_step,
        } = self.tile;
        format!(
            "op={op};k={k};v={v};chunk={chunk};gammas={gammas};dtype={dtype};arch={arch};threads={threads};rows_per_step={rows_per_step}"
        )
    }

    /// The printed names of the fields that both [`Self::canonical`] and [`Self::slug`]
    /// spell out.
    fn names(&self) -> (&'static str, u32, u32, String, &'static str, &'static str) {
        (
            self.op.name(),
            self.k,
            self.v,
            self.gammas.name(),
            self.dtype.name(),
            self.arch.name(),
        )
    }

    /// Stable 64-bit hash of [`Self::canonical`].
    pub fn hash64(&self) -> u64 {
        fnv1a64(self.canonical().as_bytes())
    }

    /// The PTX entry name: `retention_<op>_<16 hex digits of the hash>`.
    pub fn entry(&self) -> String {
        format!("retention_{}_{:016x}", self.op.name(), self.hash64())
    }

    /// A readable file stem: `decode_k64_v128_retnet8_f16_sm_80`.
    pub fn slug(&self) -> String {
        // A decode spec's `chunk` is its value slice width (see `kernels::decode_plan`).
        let mark = if self.op == KernelOp::Decode {
            'w'
        } else {
            'c'
        };
        let chunk = self
            .chunk
            .map_or_else(String::new, |c| format!("_{mark}{c}"));
        let tile = if self.tile == TileConfig::default() {
            String::new()
        } else {
            format!("_t{}r{}", self.tile.threads, self.tile.rows_per_step)
        };
        let (op, k, v, gammas, dtype, arch) = self.names();
        format!("{op}_k{k}_v{v}{chunk}_{gammas}_{dtype}_{arch}{tile}")
    }

    /// The head-dim check of a family serving any K in 1..=`max_k` and V in 1..=`max_v`.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the head dim outside its span and `family`.
    pub fn check_head_dims(
        &self,
        (max_k, max_v): (u32, u32),
        family: &str,
    ) -> Result<(), GenError> {
        check_span(
            "head dim K",
            self.k,
            max_k,
            format!("{family} serves K in 1..={max_k}"),
        )?;
        check_span(
            "head dim V",
            self.v,
            max_v,
            format!("{family} serves V in 1..={max_v}"),
        )
    }

    /// The check of a family with neither a chunk nor decays (the attention baseline, the
    /// epilogue): `chunk` is `None` and the gamma set is runtime (nothing baked in).
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the chunk or the gamma set and `family`.
    pub fn check_no_chunk_no_decays(&self, family: &str) -> Result<(), GenError> {
        if let Some(c) = self.chunk {
            return Err(unsupported("chunk", c, format!("{family} takes no chunk")));
        }
        if self.gammas != GammaSet::Runtime {
            return Err(unsupported(
                "gamma set",
                self.gammas.name(),
                format!("{family} has no decays: use `runtime` (nothing baked in)"),
            ));
        }
        Ok(())
    }

    /// The tile threads of a family whose threads own at most four value columns each: a
    /// power of two in 64..=`max_threads` with 4·threads ≥ V.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the tile's threads.
    pub fn check_column_threads(&self, max_threads: u32) -> Result<(), GenError> {
        let threads = self.tile.threads;
        if threads.is_power_of_two()
            && (64..=max_threads).contains(&threads)
            && threads * 4 >= self.v
        {
            Ok(())
        } else {
            Err(unsupported(
                "tile threads",
                threads,
                format!("a power of two in 64..={max_threads} with 4·threads >= V"),
            ))
        }
    }

    /// The tile's rows_per_step is one of `allowed` (`reason` says what they mean).
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the tile's rows_per_step.
    pub fn check_rows_per_step(&self, allowed: &[u32], reason: &str) -> Result<(), GenError> {
        let rows = self.tile.rows_per_step;
        if allowed.contains(&rows) {
            Ok(())
        } else {
            Err(unsupported("tile rows_per_step", rows, reason))
        }
    }

    /// The tile of a family that gives each warp one row: whole warps, 32..=256 threads, one
    /// row per step.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the tile's threads or rows_per_step.
    pub fn check_warp_rows(&self) -> Result<(), GenError> {
        let threads = self.tile.threads;
        if !threads.is_multiple_of(32) || !(32..=256).contains(&threads) {
            return Err(unsupported(
                "tile threads",
                threads,
                "whole warps, 32..=256 (one row per warp)",
            ));
        }
        self.check_rows_per_step(&[1], "one row per warp: 1")
    }

    /// The checks every `(rows, heads)` launch grid shares: both at least 1, a named gamma
    /// set's own head count, and the CUDA grid limits (x ≤ 2³¹ − 1, y ≤ 65535).
    ///
    /// # Errors
    /// [`GenError::Launch`] naming the rule broken.
    pub fn check_grid(&self, rows: u32, heads: u32) -> Result<(), GenError> {
        if rows == 0 || heads == 0 {
            return Err(GenError::Launch(format!(
                "rows {rows} and heads {heads} must be at least 1"
            )));
        }
        if let GammaSet::Retnet { heads: fixed } = self.gammas
            && fixed != heads
        {
            return Err(GenError::Launch(format!(
                "{} serves exactly {fixed} heads, got {heads}",
                self.gammas.name()
            )));
        }
        if heads > 65535 || rows > i32::MAX as u32 {
            return Err(GenError::Launch(format!(
                "grid ({rows}, {heads}) exceeds the CUDA grid limits"
            )));
        }
        Ok(())
    }

    /// The op check a generator's `validate` opens with: the spec's op is one of `ops`.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the op, with `reason`.
    pub fn check_op(&self, ops: &[KernelOp], reason: &str) -> Result<(), GenError> {
        if ops.contains(&self.op) {
            Ok(())
        } else {
            Err(crate::error::unsupported("op", self.op.name(), reason))
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.slug())
    }
}
