//! Plans: everything a launch of one spec needs, computed once by the spec's family — the
//! path that serves it, the columns of V one CTA serves, grid, block, shared memory, the
//! workspace and the parameter table. The runtime, the tools and the tests read plans
//! instead of re-deriving a family's tiling (see ARCHITECTURE.md: spec → plan → PTX →
//! module → launch).

use serde::{Deserialize, Serialize};

use crate::math::chunk_tiling::StreamedPlan;
use crate::spec::KernelSpec;
use crate::{GenError, LaunchGeometry, registry};

/// Which code path of its family serves a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "path")]
pub enum KernelPath {
    /// Tensor cores (`mma.sync`), whole tiles staged in shared memory.
    TensorCores,
    /// Tensor cores, a long chunk walked in passes of query rows meeting streamed k, v
    /// blocks.
    TensorCoresStreamed {
        /// Query rows per pass.
        pass_rows: u32,
        /// Column groups of O.
        groups: u32,
        /// k, v blocks held at once (C/64 resident, or 1 refilled).
        slots: u32,
    },
    /// FMA units, the whole chunk (or tile) staged in shared memory.
    Fma,
    /// FMA units, a long chunk walked in blocks of rows.
    FmaBlocked {
        /// Rows per block.
        block_rows: u32,
    },
    /// Vector loads and FMA units, one token per step (decode, attention decode).
    Vector,
}

impl From<StreamedPlan> for KernelPath {
    fn from(p: StreamedPlan) -> Self {
        KernelPath::TensorCoresStreamed {
            pass_rows: p.pass_rows,
            groups: p.groups,
            slots: p.slots,
        }
    }
}

impl KernelPath {
    /// [`KernelPath::TensorCores`] when `tensor_cores`, else [`KernelPath::Fma`].
    pub const fn tensor_cores_or_fma(tensor_cores: bool) -> Self {
        if tensor_cores {
            KernelPath::TensorCores
        } else {
            KernelPath::Fma
        }
    }

    /// Whether this path runs on tensor cores.
    pub const fn tensor_cores(self) -> bool {
        matches!(
            self,
            KernelPath::TensorCores | KernelPath::TensorCoresStreamed { .. }
        )
    }
}

/// The size of one launch: batch rows (sequences N for varlen and decode), heads, and
/// tokens (T per row for the sequence ops, the cached context for attention decode; the
/// decode step ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchSize {
    /// Batch rows (or sequences).
    pub rows: u32,
    /// Heads.
    pub heads: u32,
    /// Tokens per row (or context length).
    pub tokens: u32,
}

/// Everything one launch of `spec` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelPlan {
    /// The spec planned.
    pub spec: KernelSpec,
    /// The path that serves it.
    pub path: KernelPath,
    /// Columns of V (and of the state) one CTA serves; the grid walks V / value_slice of
    /// them.
    pub value_slice: u32,
    /// Grid, block and dynamic shared memory. For the two-phase ops, one segment per
    /// (row, head): [`crate::two_phase_plan`] multiplies it by the segments.
    pub geometry: LaunchGeometry,
    /// Bytes of device scratch the launch needs besides its inputs and outputs (the
    /// attention split pass's partials; 0 for most).
    pub workspace_bytes: u64,
    /// Parameter names of the entry, in launch order.
    pub params: Vec<&'static str>,
}

impl KernelPlan {
    /// The plan of `spec` on `path` with `value_slice`, `geometry` and `params`, no workspace
    /// ([`Self::with_workspace`] adds one).
    pub fn new(
        spec: &KernelSpec,
        path: KernelPath,
        value_slice: u32,
        geometry: LaunchGeometry,
        params: Vec<&'static str>,
    ) -> Self {
        KernelPlan {
            spec: *spec,
            path,
            value_slice,
            geometry,
            workspace_bytes: 0,
            params,
        }
    }

    /// This plan with `bytes` of device scratch.
    #[must_use]
    pub fn with_workspace(self, bytes: u64) -> Self {
        KernelPlan {
            workspace_bytes: bytes,
            ..self
        }
    }
}

/// The plan of `spec` at `size` (validated first).
///
/// # Errors
/// [`GenError::UnsupportedSpec`] when no family serves the spec; [`GenError::Launch`] when
/// the size does not fit it.
pub fn plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    (registry::family(spec.op).plan)(spec, size)
}
