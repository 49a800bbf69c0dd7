//! The parallel backward kernels (dQ, dK and dV passes of the `parallel_backward` family),
//! run as emitted PTX in the emulator — bounds and shared-memory races checked on every
//! access, reads of never-written shared memory counted — match the f64 reference backward
//! (`reference::parallel_backward` on the dtype-rounded inputs) with the forward's
//! tolerances: f32 ≤ 1e-5 max relative error, f16/bf16 ≤ 5e-3 relative RMSE, and no read
//! of unwritten shared memory in any dtype.

use kernel_gen::kernels::parallel_backward::{DEFAULT_TILE, passes};
use kernel_gen::{Arch, GammaSet, KernelSpec};
use retention_check::parallel_backward::{BackwardCheck, Problem, check};
use retention_core::Dtype;
use retention_runtime::launch_target::Emulator;

/// A scale that is not the default K^-1/2, so a kernel that ignores it fails.
const SCALE: f64 = 0.29;

fn run(spec: &KernelSpec, batch: usize, heads: usize, tokens: usize, seed: u64) -> BackwardCheck {
    let problem = Problem {
        batch,
        heads,
        tokens,
        scale: SCALE,
    };
    let got = check(spec, &Emulator(spec.arch), problem, seed)
        .unwrap_or_else(|e| panic!("{} T={tokens}: {e}", spec.slug()));
    if let Some(why) = got.failure(spec.dtype) {
        panic!("{} T={tokens}: {why}", spec.slug());
    }
    for c in got.passes() {
        assert_eq!(c.unwritten_shared_reads, 0, "{}", spec.slug());
    }
    println!(
        "{} B={batch} H={heads} T={tokens}: dq {:.2e} dk {:.2e} dv {:.2e}",
        spec.slug(),
        got.dq.o_error,
        got.dk.o_error,
        got.dv.o_error
    );
    got
}

#[test]
fn smoke() {
    let [spec, ..] = passes(
        64,
        64,
        DEFAULT_TILE,
        GammaSet::Runtime,
        Dtype::F32,
        Arch::Sm80,
    );
    run(&spec, 1, 3, 2 * 32 + 5, 1);
}
