//! Which chunkwise-backward specs the tensor-core generator ([`super::tc`]) serves and its
//! shared tiles (ARCHITECTURE §3, §7). A tensor-core kernel is named by its tile,
//! [`TC_TILE`], so the FMA kernels of the same (op, K, V, C, γ, dtype, arch) keep their
//! names and PTX; the runtime asks for the tensor-core spec first ([`tensor_core_spec`]).

use retention_core::Dtype;

use super::{Role, padded_dims};
use crate::GenError;
use crate::dsl::tiles::SharedTile16;
use crate::error::unsupported;
use crate::math::chunk_tiling::tc_dims;
use crate::spec::{KernelSpec, TileConfig};

/// The tile that names a tensor-core kernel: 256 threads (8 warps), 16-row `mma` steps.
pub const TC_TILE: TileConfig = TileConfig {
    threads: 256,
    rows_per_step: 16,
};

/// Columns of N one tensor-core CTA serves (the grid's z axis walks N/64 slices).
pub const TC_SLICE: u32 = 64;

/// Most padded state rows P a tensor-core CTA holds in registers (two 16-row slices per
/// warp); wider P (V = 512 for dq and dk) stays on the FMA kernels.
pub const TC_MAX_P: u32 = 256;

/// `spec` named as its tensor-core kernel.
pub fn tensor_core_spec(spec: &KernelSpec) -> KernelSpec {
    KernelSpec {
        tile: TC_TILE,
        ..*spec
    }
}

/// Whether `spec` asks for the tensor-core kernel.
pub fn is_tensor_core(spec: &KernelSpec) -> bool {
    spec.tile == TC_TILE
}

/// Check that the tensor-core generator serves `spec`: 16-bit inputs, even head dims (whole
/// 4-byte `cp.async` pieces) and padded P ≤ [`TC_MAX_P`].
///
/// # Errors
/// [`GenError::UnsupportedSpec`] naming the dtype, the head dims or the tile.
pub fn check(spec: &KernelSpec) -> Result<(), GenError> {
    if spec.op.is_varlen() {
        return Err(unsupported(
            "op",
            spec.op.name(),
            "the tensor-core chunkwise backward serves dense batches (varlen uses the default tile)",
        ));
    }
    if spec.dtype == Dtype::F32 {
        return Err(unsupported(
            "dtype",
            spec.dtype.name(),
            "the tensor-core chunkwise backward takes f16 or bf16 (f32 uses the default tile)",
        ));
    }
    if !tc_dims(spec) {
        return Err(unsupported(
            "head dims",
            format!("K={}, V={}", spec.k, spec.v),
            "the tensor-core chunkwise backward needs even K and V",
        ));
    }
    let (p, _) = padded_dims(spec);
    if p > TC_MAX_P {
        return Err(unsupported(
            "tile",
            format!("{:?}", spec.tile),
            format!(
                "the tensor-core chunkwise backward holds P <= {TC_MAX_P} state rows, not {p}; use the default tile"
            ),
        ));
    }
    Ok(())
}

/// Shared tiles of the tensor-core backward (16-bit, swizzled), then the f32 decay table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcBackwardLayout {
    /// x `[C][P]`.
    pub x: SharedTile16,
    /// y `[C][P]`.
    pub y: SharedTile16,
    /// w `[C][64]` (this CTA's columns of N).
    pub w: SharedTile16,
    /// S̃ `[P][64]`: the f32 state rounded to the input type.
    pub rh: SharedTile16,
    /// The rounding's rest S − S̃ `[P][64]`, rounded: S̃ + rest carries the state to about
    /// twice the input type's precision.
    pub rl: SharedTile16,
    /// The gradient rows `[C][64]` on their way out.
    pub o: SharedTile16,
    /// dq, dk: the input paired with the gradient in d log γ (q, k) `[C][64]`, staged with
    /// the chunk so its reads have shared-memory latency (0 rows for dv).
    pub own: SharedTile16,
    /// γ^d, d = 0..=C, f32.
    pub decay: u32,
    /// s·γ^d, d = 0..=C, f32: the reverse walk's update weights s·ξ read whole.
    pub decay_s: u32,
    /// Total bytes.
    pub total: u32,
}

impl TcBackwardLayout {
    /// The layout for padded state rows `p`, chunk `c`, and whether d log γ needs the own
    /// tile.
    pub const fn new(p: u32, c: u32, own: bool) -> Self {
        let x = SharedTile16::new(0, c, p);
        let y = SharedTile16::new(x.offset + x.bytes(), c, p);
        let w = SharedTile16::new(y.offset + y.bytes(), c, TC_SLICE);
        let rh = SharedTile16::new(w.offset + w.bytes(), p, TC_SLICE);
        let rl = SharedTile16::new(rh.offset + rh.bytes(), p, TC_SLICE);
        let o = SharedTile16::new(rl.offset + rl.bytes(), c, TC_SLICE);
        let own = SharedTile16::new(o.offset + o.bytes(), if own { c } else { 0 }, TC_SLICE);
        let decay = own.offset + own.bytes();
        let table = ((c + 1) * 4).div_ceil(16) * 16;
        TcBackwardLayout {
            x,
            y,
            w,
            rh,
            rl,
            o,
            own,
            decay,
            decay_s: decay + table,
            total: decay + 2 * table,
        }
    }

    /// The shared window's comment.
    pub fn describe(&self) -> String {
        format!(
            "swizzled 16-bit x [C,P] @{}, y [C,P] @{}, w [C,64] @{}, S~ [P,64] @{}, S-S~ [P,64] @{}, grad [C,64] @{}, own [{},64] @{}; f32 gamma^d [C+1] @{}, s gamma^d [C+1] @{}",
            self.x.offset,
            self.y.offset,
            self.w.offset,
            self.rh.offset,
            self.rl.offset,
            self.o.offset,
            self.own.rows,
            self.own.offset,
            self.decay,
            self.decay_s
        )
    }
}

/// The tensor-core layout of `spec`.
pub fn tc_layout(spec: &KernelSpec) -> TcBackwardLayout {
    let (p, _) = padded_dims(spec);
    let own = Role::of(spec.op) != Some(Role::Dv);
    TcBackwardLayout::new(p, spec.chunk.unwrap_or_default(), own)
}

/// Columns of the gradient built at a time: all 64 (their state term taken in the scores'
/// pass over P), and 16 where two state slices per warp (P = 256) leave no registers for
/// more (checked by ptxas: no spills on sm_80 or sm_90).
pub fn out_width(spec: &KernelSpec) -> u32 {
    let (p, _) = padded_dims(spec);
    if p == TC_MAX_P { 16 } else { 64 }
}
