//! The launches of one backward call, planned once: the chunkwise backward's three kernels
//! (dq, dk, dv — the kernel chunk chosen here) and the parallel backward's four (dq, dk, dv,
//! d log γ partials — the tile chosen here), as [`KernelPlan`]s in launch order. The runtime
//! and the checkers launch these plans and read each one's op and workspace; how the
//! families split the work stays inside them (ARCHITECTURE §3, §7).

use crate::GenResult;
use crate::arch::Arch;
use crate::error::unsupported;
use crate::kernels::{chunkwise_backward, parallel_backward};
use crate::plan::{KernelPlan, LaunchSize, plan};
use crate::spec::{GammaSet, KernelOp, KernelSpec};

/// The problem one backward serves: head dims, decays, dtype, target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackwardProblem {
    /// Key head dim K.
    pub k: u32,
    /// Value head dim V.
    pub v: u32,
    /// Named γ set, or runtime γ.
    pub gammas: GammaSet,
    /// Element type of q, k, v, dO and dq, dk, dv.
    pub dtype: retention_core::Dtype,
    /// Target architecture.
    pub arch: Arch,
}

/// The chunkwise backward's plans (dq, dk, dv, in launch order) at `size`: kernel chunk 64,
/// or 32 where 64 does not fit on chip. The gradients do not depend on the chunk, so any
/// user chunk runs on these. Each plan's workspace is the f32 d log γ partials its kernel
/// writes ([`workspace_floats`]).
///
/// # Errors
/// [`GenError::UnsupportedSpec`](crate::GenError::UnsupportedSpec) for a (K, V, dtype) no
/// chunk serves (the last refusal); [`GenError::Launch`](crate::GenError::Launch) for a size
/// the grid cannot hold.
pub fn chunkwise_backward_plans(
    p: BackwardProblem,
    size: LaunchSize,
) -> GenResult<[KernelPlan; 3]> {
    chunkwise_plans(p, size, chunkwise_backward::OPS)
}

/// As [`chunkwise_backward_plans`] for a packed variable-length batch: the varlen ops
/// (`chunkwise_varlen_bwd_{dq,dk,dv}`), `size.rows` the N sequences, on the same kernel chunk.
///
/// # Errors
/// As [`chunkwise_backward_plans`].
pub fn chunkwise_varlen_backward_plans(
    p: BackwardProblem,
    size: LaunchSize,
) -> GenResult<[KernelPlan; 3]> {
    chunkwise_plans(p, size, chunkwise_backward::VARLEN_OPS)
}

/// The plans of `ops` (dq, dk, dv) on the largest kernel chunk that serves `p`.
fn chunkwise_plans(
    p: BackwardProblem,
    size: LaunchSize,
    ops: [KernelOp; 3],
) -> GenResult<[KernelPlan; 3]> {
    let spec = |op, c| KernelSpec::chunkwise(p.k, p.v, c, p.gammas, p.dtype, p.arch).with_op(op);
    let mut refusal = None;
    for c in chunkwise_backward::SUPPORTED_CHUNKS.into_iter().rev() {
        match spec(KernelOp::ChunkwiseBackwardDq, c).validate() {
            Ok(()) => {
                // Each op on its tensor-core kernel where it has one (dense 16-bit), else FMA.
                let [dq, dk, dv] = ops.map(|op| chunkwise_backward::preferred(&spec(op, c)));
                return Ok([plan(&dq, size)?, plan(&dk, size)?, plan(&dv, size)?]);
            }
            Err(e) => refusal = Some(e),
        }
    }
    Err(refusal.unwrap_or_else(|| unsupported("chunkwise backward chunk", "none", "no chunk")))
}

/// The parallel backward's plans (dq, dk, dv, d log γ partials, in launch order) at `size`,
/// on the family's default tile. The last plan's workspace is its f32 partials.
///
/// # Errors
/// As [`chunkwise_backward_plans`].
pub fn parallel_backward_plans(p: BackwardProblem, size: LaunchSize) -> GenResult<[KernelPlan; 4]> {
    let tile = parallel_backward::DEFAULT_TILE;
    let [dq, dk, dv, dg] = parallel_backward::passes(p.k, p.v, tile, p.gammas, p.dtype, p.arch);
    Ok([
        plan(&dq, size)?,
        plan(&dk, size)?,
        plan(&dv, size)?,
        plan(&dg, size)?,
    ])
}

/// f32 elements of a plan's workspace (the d log γ partials of the backward kernels).
pub fn workspace_floats(plan: &KernelPlan) -> usize {
    (plan.workspace_bytes / 4) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GenError;
    use retention_core::Dtype;

    fn problem(k: u32, v: u32, dtype: Dtype) -> BackwardProblem {
        BackwardProblem {
            k,
            v,
            gammas: GammaSet::Runtime,
            dtype,
            arch: Arch::Sm80,
        }
    }

    const SIZE: LaunchSize = LaunchSize {
        rows: 2,
        heads: 3,
        tokens: 100,
    };

    #[test]
    fn varlen_plans_are_the_varlen_ops_on_the_dense_chunk() {
        // f32: both on the FMA kernels (16-bit dense ops may take their tensor-core kernel,
        // which the varlen ops do not have; `tensor_cores_only_for_dense_16_bit` below).
        let dense = chunkwise_backward_plans(problem(256, 512, Dtype::F32), SIZE).unwrap();
        let packed = chunkwise_varlen_backward_plans(problem(256, 512, Dtype::F32), SIZE);
        for (d, v) in dense.iter().zip(packed.unwrap().iter()) {
            assert!(v.spec.op.is_varlen() && !d.spec.op.is_varlen());
            assert_eq!(
                KernelSpec {
                    op: d.spec.op,
                    ..v.spec
                },
                d.spec
            );
            assert_eq!(v.geometry, d.geometry);
            assert!(v.params.contains(&"p_cu_seqlens") && !v.params.contains(&"p_t"));
        }
    }

    #[test]
    fn tensor_cores_only_for_dense_16_bit() {
        let tc = |plans: [KernelPlan; 3]| plans.map(|p| p.path.tensor_cores());
        let dense = |dtype| chunkwise_backward_plans(problem(128, 128, dtype), SIZE).unwrap();
        let packed = |dtype| chunkwise_varlen_backward_plans(problem(128, 128, dtype), SIZE);
        assert_eq!(tc(dense(Dtype::Bf16)), [true; 3]);
        assert_eq!(tc(dense(Dtype::F32)), [false; 3]);
        assert_eq!(tc(packed(Dtype::Bf16).unwrap()), [false; 3]);
        // V = 512: dq and dk hold P = V state rows, past the tensor-core kernels' 256.
        assert_eq!(tc(dense_at(256, 512)), [false, false, true]);
    }

    fn dense_at(k: u32, v: u32) -> [KernelPlan; 3] {
        chunkwise_backward_plans(problem(k, v, Dtype::F16), SIZE).unwrap()
    }

    #[test]
    fn chunkwise_plans_are_dq_dk_dv_on_one_chunk() {
        for (k, v) in [(64, 64), (256, 512), (7, 33)] {
            let plans = chunkwise_backward_plans(problem(k, v, Dtype::Bf16), SIZE).unwrap();
            let ops = plans.each_ref().map(|p| p.spec.op);
            assert_eq!(ops, chunkwise_backward::OPS);
            let chunk = plans[0].spec.chunk;
            let served = chunk.is_some_and(|c| chunkwise_backward::SUPPORTED_CHUNKS.contains(&c));
            assert!(served, "{k}x{v}: {chunk:?}");
            assert!(plans.iter().all(|p| p.spec.chunk == chunk), "{k}x{v}");
        }
        let err = chunkwise_backward_plans(problem(300, 64, Dtype::F32), SIZE).unwrap_err();
        assert!(matches!(err, GenError::UnsupportedSpec { .. }), "{err}");
    }

    #[test]
    fn parallel_plans_end_with_the_partials_workspace() {
        let plans = parallel_backward_plans(problem(60, 100, Dtype::F16), SIZE).unwrap();
        let ops = plans.each_ref().map(|p| p.spec.op);
        assert_eq!(
            ops,
            [
                KernelOp::ParallelBackwardDq,
                KernelOp::ParallelBackwardDk,
                KernelOp::ParallelBackwardDv,
                KernelOp::ParallelBackwardDlogGamma,
            ]
        );
        let partials = parallel_backward::dlog_gamma_partials(&plans[3].geometry);
        assert_eq!(workspace_floats(&plans[3]), partials);
        assert!(plans[..3].iter().all(|p| workspace_floats(p) == 0));
    }
}
