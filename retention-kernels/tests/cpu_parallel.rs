//! CPU parallel form against the f64 reference: every dtype, several key blocks, and heads
//! whose decay underflows to zero across blocks (the early exit).

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, params};
use retention_core::Gammas;
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::{self, RetentionParams};

fn blocks_and_fast_decays<T: CpuElement>() {
    // T = 150 spans three 64-token blocks; γ = 0.05 underflows within two blocks.
    let x = Qkv::<T>::new(61, (2, 150, 3, 9, 11));
    let (q, k, v) = x.f64();
    let p = RetentionParams::new(
        Gammas::from_list(vec![0.05, 0.5, 0.999]).unwrap(),
        Some(0.9),
    );
    let o = cpu::parallel(&x.q, &x.k, &x.v, &p).unwrap();
    let o_ref = reference::parallel(&q, &k, &v, &p).unwrap();
    assert_matches("parallel, mixed decays", &o, &o_ref);
    // Short sequences: one partial block.
    let x = Qkv::<T>::new(62, (1, 5, 2, 4, 3));
    let (q, k, v) = x.f64();
    let p = params(2, None);
    let o = cpu::parallel(&x.q, &x.k, &x.v, &p).unwrap();
    assert_matches(
        "parallel, T = 5",
        &o,
        &reference::parallel(&q, &k, &v, &p).unwrap(),
    );
}

#[test]
fn parallel_matches_reference_every_dtype() {
    for_each_dtype!(blocks_and_fast_decays);
}
