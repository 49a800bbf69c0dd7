//! The chunkwise backward's kernels (dq, dk, dv + dH0) run as PTX in the emulator and held to
//! the f64 reference backward with the forward's tolerances (ARCHITECTURE §4, §7): f32
//! ≤ 1e-5 max relative, f16/bf16 ≤ 5e-3 relative RMSE, dH0 ≤ 1e-5 max relative, and no read
//! of shared memory nothing wrote.

use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec};
use retention_check::chunkwise_backward::{BackwardCase, check_case};
use retention_core::Dtype;
use retention_runtime::launch_target::Emulator;

fn spec(k: u32, v: u32, c: u32, gammas: GammaSet, dtype: Dtype, arch: Arch) -> KernelSpec {
    KernelSpec::chunkwise_backward(KernelOp::ChunkwiseBackwardDq, k, v, c, gammas, dtype, arch)
}

fn case(t: usize, reference_chunk: usize, with_h0: bool, with_dht: bool) -> BackwardCase {
    BackwardCase {
        batch: 1,
        heads: 3,
        t,
        reference_chunk,
        with_h0,
        with_dht,
        scale: 0.29,
    }
}

fn run(s: &KernelSpec, c: BackwardCase, seed: u64) {
    let got = check_case(s, &Emulator(s.arch), c, seed).unwrap_or_else(|e| panic!("{s}: {e}"));
    eprintln!(
        "{s} {c:?}: grads {:?} dh0 {:.2e}",
        got.grad_errors, got.dh0_error
    );
    if let Some(why) = got.failure(s.dtype) {
        panic!("{s} {c:?}: {why}");
    }
}

#[test]
fn f32_runtime_gamma_partial_chunk_with_states() {
    let s = spec(64, 64, 32, GammaSet::Runtime, Dtype::F32, Arch::Sm80);
    run(&s, case(37, 32, true, true), 1);
}
