//! `kernel-gen`: the retention kernel DSL (a typed builder in plain Rust), its legalise pass
//! and PTX emitter, the retention kernel families, `KernelSpec`, plans, and the catalog
//! writer. The PTX emulator lives in its own crate and is re-exported here as [`emu`], so
//! that it can judge the emitter's output without sharing its assumptions.
//!
//! This crate must not know about devices, streams, memory pools or `cudarc`: it turns a
//! `KernelSpec` into a plan and PTX text and nothing more.
//!
//! # Layers (ARCHITECTURE §3), dependencies pointing one way
//! [`dsl`] (IR, builder, tiles; legalise and emit depend on the IR) ← [`blocks`] (building
//! blocks: global views, staging, decays, FMA products) ← [`math`] (chunk tiling, the chunk
//! parameter table, the causal decay mask, the two-phase segment fold) ← [`kernels`] (the
//! families: decode, chunkwise, two-phase, parallel, attention baseline, chunkwise backward,
//! parallel backward, epilogue — never importing each other) ← [`registry`] and
//! [`plan`](mod@plan) (one row per family: validate → plan →
//! emit).
//!
//! # Using it
//! - [`plan()`] gives everything a launch of a spec needs ([`KernelPlan`]: path, value slice,
//!   grid, block, shared memory, workspace, parameter table); [`emit_ptx`] turns the spec
//!   into a PTX module whose entry is [`KernelSpec::entry`]. [`launch_geometry`] and
//!   [`param_names`] are the plan's parts for callers that know no launch length.
//! - Few (row, head) pairs and long sequences: the two-phase chunkwise forward
//!   ([`kernels::two_phase`]) — [`prefer_two_phase`] picks a segment length,
//!   [`two_phase_plan`] sizes the `chunk_states` and `chunkwise_segmented` launches and
//!   their f32 workspace. The attention baseline's split plan: [`attention_decode_plan`].
//! - A backward call's launches, planned at once: [`chunkwise_backward_plans`] (dense) and
//!   [`chunkwise_varlen_backward_plans`] (packed),
//!   [`parallel_backward_plans`] (each plan's op says which gradient it writes; the d log γ
//!   partials are plan workspaces, [`workspace_floats`]).
//! - [`catalog::default_catalog`] lists what ships; `kernel-gen --out DIR [--arch
//!   sm_80,sm_90] [--filter TEXT]` writes one `.ptx` per catalog spec and `manifest.json`
//!   (with `ptxas -v` figures when ptxas is found); `kernel-gen emu FILE.ptx --launch
//!   LAUNCH.json` runs a module in the emulator.
//! - ptxas lane: `RETENTION_PTXAS=$(./scripts/install-ptxas.sh) cargo test -p kernel-gen`.
//! - Golden PTX: after an intended codegen change, review the diff of
//!   `UPDATE_GOLDEN=1 cargo test -p kernel-gen --test golden`.

pub use ptx_emu as emu;

mod arch;
pub mod backward_plan;
pub mod blocks;
pub mod catalog;
pub mod dsl;
mod error;
pub mod kernels;
pub mod manifest;
pub mod math;
pub mod plan;
pub mod ptxas;
pub mod registry;
pub mod spec;

pub use arch::Arch;
pub use backward_plan::{
    BackwardProblem, chunkwise_backward_plans, chunkwise_varlen_backward_plans,
    parallel_backward_plans, workspace_floats,
};
pub use error::{GenError, GenResult};
pub use kernels::attention_decode::{AttentionDecodePlan, plan as attention_decode_plan};
pub use kernels::decode_plan::decode_variant;
pub use kernels::two_phase::{TwoPhasePlan, prefer_two_phase, two_phase_plan};
pub use plan::{KernelPath, KernelPlan, LaunchSize, plan};
pub use spec::{GammaSet, KernelOp, KernelSpec, TileConfig, default_parallel_tile};

use serde::{Deserialize, Serialize};

/// How to launch a kernel: CUDA grid and block dimensions and dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchGeometry {
    /// CTAs along x, y, z.
    pub grid: [u32; 3],
    /// Threads per CTA along x, y, z.
    pub block: [u32; 3],
    /// Bytes of dynamic shared memory (static shared memory is declared in the PTX).
    pub dynamic_smem_bytes: u32,
}

/// The PTX module (text) for `spec`, validated first.
///
/// # Errors
/// [`GenError::UnsupportedSpec`] when no generator serves the spec.
pub fn emit_ptx(spec: &KernelSpec) -> Result<String, GenError> {
    Ok((registry::family(spec.op).generate)(spec)?.to_ptx())
}

/// The launch of `spec` for `rows` batch rows and `heads` heads (for the parallel forward,
/// whose grid also depends on T, prefer [`plan()`]). For the two-phase ops (`chunk_states`,
/// `chunkwise_segmented`) this is the grid of ONE segment per (row, head):
/// [`two_phase_plan`] gives the whole launch.
///
/// # Errors
/// [`GenError::Launch`] when the sizes do not fit the spec; spec errors as [`emit_ptx`].
pub fn launch_geometry(spec: &KernelSpec, rows: u32, heads: u32) -> GenResult<LaunchGeometry> {
    (registry::family(spec.op).launch_geometry)(spec, rows, heads)
}

/// Parameter names of `spec`'s entry, in launch order.
pub fn param_names(spec: &KernelSpec) -> Vec<&'static str> {
    (registry::family(spec.op).param_names)(spec)
}
