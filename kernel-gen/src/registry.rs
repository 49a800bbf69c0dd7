//! The one registry of kernel families: which family serves each [`KernelOp`], and its
//! validate → plan → emit steps. [`crate::emit_ptx`], [`crate::launch_geometry`],
//! [`crate::param_names`], [`crate::plan()`] and [`KernelSpec::validate`] all route here, so
//! adding a family is one row in [`FAMILIES`] (see ARCHITECTURE.md).

use crate::dsl::Kernel;
use crate::kernels::{attention_decode, chunkwise, decode, epilogue, parallel, two_phase};
use crate::kernels::{boundary_states, chunkwise_backward, head_sum, layer_ops, parallel_backward};
use crate::plan::{KernelPath, KernelPlan, LaunchSize};
use crate::spec::{KernelOp, KernelSpec};
use crate::{GenError, LaunchGeometry};

/// A kernel family: the ops it serves and its steps.
pub struct Family {
    /// Family name (`decode`, `chunkwise`, `two_phase`, `parallel`, `attention`, `epilogue`,
    /// `chunkwise_backward`, `parallel_backward`, `layer_ops`, `head_sum`, `boundary_states`).
    pub name: &'static str,
    /// The ops it serves.
    pub ops: &'static [KernelOp],
    /// Check that it serves a spec, before a single instruction is emitted.
    pub validate: fn(&KernelSpec) -> Result<(), GenError>,
    /// The launch of one spec for `(rows, heads)` (one segment of the two-phase ops).
    pub launch_geometry: fn(&KernelSpec, u32, u32) -> Result<LaunchGeometry, GenError>,
    /// Parameter names of the entry, in launch order.
    pub param_names: fn(&KernelSpec) -> Vec<&'static str>,
    /// The plan of one launch.
    pub plan: fn(&KernelSpec, LaunchSize) -> Result<KernelPlan, GenError>,
    /// The kernel (validated first).
    pub generate: fn(&KernelSpec) -> Result<Kernel, GenError>,
}

/// Every family, one row each.
pub const FAMILIES: [Family; 11] = [
    Family {
        name: "decode",
        ops: &[KernelOp::Decode],
        validate: decode::validate,
        launch_geometry: decode::launch_geometry,
        param_names: decode::param_names,
        plan: decode_plan,
        generate: decode::generate,
    },
    Family {
        name: "chunkwise",
        ops: &[
            KernelOp::Chunkwise,
            KernelOp::ChunkwiseVarlen,
            KernelOp::ChunkwiseSegmented,
        ],
        validate: chunkwise::validate,
        launch_geometry: chunkwise::launch_geometry,
        param_names: chunkwise::param_names,
        plan: chunkwise::plan,
        generate: chunkwise::generate,
    },
    Family {
        name: "two_phase",
        ops: &[KernelOp::ChunkStates],
        validate: two_phase::validate,
        launch_geometry: two_phase::launch_geometry,
        param_names: two_phase::param_names,
        plan: two_phase::plan,
        generate: two_phase::generate,
    },
    Family {
        name: "parallel",
        ops: &[KernelOp::Parallel],
        validate: parallel::validate,
        launch_geometry: parallel::launch_geometry,
        param_names: parallel::param_names,
        plan: parallel::plan,
        generate: parallel::generate,
    },
    Family {
        name: "attention",
        ops: &[KernelOp::AttentionDecode, KernelOp::AttentionCombine],
        validate: attention_decode::validate,
        launch_geometry: attention_decode::launch_geometry,
        param_names: attention_decode::param_names,
        plan: attention_plan,
        generate: attention_generate,
    },
    Family {
        name: "epilogue",
        ops: &[KernelOp::Epilogue, KernelOp::EpilogueBackward],
        validate: epilogue::validate,
        launch_geometry: epilogue::launch_geometry,
        param_names: epilogue::param_names,
        plan: epilogue::plan,
        generate: epilogue::generate,
    },
    Family {
        name: "chunkwise_backward",
        ops: &[
            KernelOp::ChunkwiseBackwardDq,
            KernelOp::ChunkwiseBackwardDk,
            KernelOp::ChunkwiseBackwardDv,
            KernelOp::ChunkwiseVarlenBackwardDq,
            KernelOp::ChunkwiseVarlenBackwardDk,
            KernelOp::ChunkwiseVarlenBackwardDv,
        ],
        validate: chunkwise_backward::validate,
        launch_geometry: chunkwise_backward::launch_geometry,
        param_names: chunkwise_backward::param_names,
        plan: chunkwise_backward::plan,
        generate: chunkwise_backward::generate,
    },
    Family {
        name: "parallel_backward",
        ops: &[
            KernelOp::ParallelBackwardDq,
            KernelOp::ParallelBackwardDk,
            KernelOp::ParallelBackwardDv,
            KernelOp::ParallelBackwardDlogGamma,
        ],
        validate: parallel_backward::validate,
        launch_geometry: parallel_backward::launch_geometry,
        param_names: parallel_backward::param_names,
        plan: parallel_backward::plan,
        generate: parallel_backward::generate,
    },
    Family {
        name: "layer_ops",
        ops: &[KernelOp::RmsNorm, KernelOp::Gelu, KernelOp::CopyRows],
        validate: layer_ops::validate,
        launch_geometry: layer_ops::launch_geometry,
        param_names: layer_ops::param_names,
        plan: layer_ops::plan,
        generate: layer_ops::generate,
    },
    Family {
        name: "head_sum",
        ops: &[KernelOp::HeadSum],
        validate: head_sum::validate,
        launch_geometry: head_sum::launch_geometry,
        param_names: head_sum::param_names,
        plan: head_sum::plan,
        generate: head_sum::generate,
    },
    Family {
        name: "boundary_states",
        ops: &[KernelOp::ChunkBoundaryStates],
        validate: boundary_states::validate,
        launch_geometry: boundary_states::launch_geometry,
        param_names: boundary_states::param_names,
        plan: boundary_states::plan,
        generate: boundary_states::generate,
    },
];

/// The attention family emits two kernels: the split pass and its combine pass.
fn attention_generate(spec: &KernelSpec) -> Result<Kernel, GenError> {
    match spec.op {
        KernelOp::AttentionCombine => crate::kernels::attention_combine::generate(spec),
        _ => attention_decode::generate(spec),
    }
}

/// The decode step's plan: one CTA per (row, head, V slice), no workspace.
fn decode_plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        decode::value_slice(spec),
        decode::launch_geometry(spec, size.rows, size.heads)?,
        decode::param_names(spec),
    ))
}

/// The attention baseline's plan for a `size.tokens`-token context: the split pass (its
/// partials are the workspace) or the combine pass.
fn attention_plan(spec: &KernelSpec, size: LaunchSize) -> Result<KernelPlan, GenError> {
    let split = attention_decode::plan(spec, size.rows, size.heads, size.tokens.max(1))?;
    let geometry = match spec.op {
        KernelOp::AttentionCombine => {
            attention_decode::launch_geometry(spec, size.rows, size.heads)?
        }
        _ => split.split,
    };
    Ok(KernelPlan::new(
        spec,
        KernelPath::Vector,
        spec.v,
        geometry,
        attention_decode::param_names(spec),
    )
    .with_workspace(split.partial_floats * 4))
}

/// The family that serves `op` (every op has exactly one; a test checks it).
pub fn family(op: KernelOp) -> &'static Family {
    FAMILIES
        .iter()
        .find(|f| f.ops.contains(&op))
        .expect("every KernelOp has a family")
}

impl KernelSpec {
    /// Check that a family serves this spec, before a single instruction is emitted.
    ///
    /// # Errors
    /// [`GenError::UnsupportedSpec`] naming the first field its family does not serve.
    pub fn validate(&self) -> Result<(), GenError> {
        (family(self.op).validate)(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_exactly_one_family() {
        for op in KernelOp::ALL {
            let serving = FAMILIES.iter().filter(|f| f.ops.contains(&op)).count();
            assert_eq!(serving, 1, "{op:?} is served by {serving} families");
        }
    }
}
