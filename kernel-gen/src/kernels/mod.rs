//! The kernel families — decode, chunkwise (one-pass, varlen, and phase 2 of two-phase),
//! two-phase (its plan and phase 1), parallel, the chunkwise backward (dq, dk, dv), the
//! parallel backward, the softmax-attention decode baseline, the gated MSR epilogue
//! (forward and backward), the layer ops around them (RMSNorm over the width, GELU), the
//! per-head sum of f32 partials (`head_sum`), and the fold of the chunk-entering states
//! (`boundary_states`) —
//! each validating its spec first. Families are written in the building blocks
//! ([`crate::blocks`]) and the retention math ([`crate::math`]) and never import each
//! other; [`crate::registry`] routes a spec to its family. See ARCHITECTURE.md.

pub mod attention_combine;
pub mod attention_decode;
mod attention_layout;
mod attention_merge;
mod attention_plan;
mod attention_spec;
pub mod boundary_states;
pub mod chunkwise;
pub mod chunkwise_backward;
pub mod decode;
mod decode_phases;
pub mod decode_plan;
mod decode_stage;
pub mod epilogue;
pub mod head_sum;
pub mod layer_ops;
pub mod parallel;
pub mod parallel_backward;
pub mod two_phase;

// The decode and attention families reach the building blocks through their parent.
pub(crate) use crate::blocks::decay;
pub(crate) use crate::error::unsupported;

use crate::GenError;
use crate::spec::KernelSpec;

/// The checks every `(rows, heads)` launch grid shares (see [`KernelSpec::check_grid`]).
pub(crate) fn check_grid(spec: &KernelSpec, rows: u32, heads: u32) -> Result<(), GenError> {
    spec.check_grid(rows, heads)
}
