//! CPU decode step against the f64 reference: every dtype, scrambled slots in a larger pool,
//! many steps in a row, and pool states nobody asked for left untouched.

#[macro_use]
mod cpu_support;

use cpu_support::{assert_matches, assert_state, params, random, random_state};
use retention_core::HostTensor;
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference;

fn scrambled_slots<T: CpuElement>() {
    // 4 rows into a pool of 7, in scrambled order; odd K and V hit the vector tails.
    let (n, h, dk, dv, cap) = (4usize, 3usize, 13usize, 19usize, 7usize);
    let slots = [5usize, 0, 3, 6];
    let p = params(h, Some(0.8));
    let mut pool = random_state(1, &[cap, h, dk, dv]);
    let mut pool_ref = pool.to_f64();
    for step in 0..5u64 {
        let q: HostTensor<T> = random(10 * step + 2, &[n, h, dk]);
        let k: HostTensor<T> = random(10 * step + 3, &[n, h, dk]);
        let v: HostTensor<T> = random(10 * step + 4, &[n, h, dv]);
        let untouched = pool.data()[h * dk * dv..2 * h * dk * dv].to_vec(); // slot 1
        let o = cpu::decode_step(&q, &k, &v, &mut pool, &slots, &p).unwrap();
        let o_ref = reference::decode_step(
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &mut pool_ref,
            &slots,
            &p,
        )
        .unwrap();
        assert_matches(&format!("decode o, step {step}"), &o, &o_ref);
        assert_state(&format!("decode pool, step {step}"), &pool, &pool_ref);
        assert_eq!(
            &pool.data()[h * dk * dv..2 * h * dk * dv],
            &untouched[..],
            "slot 1 is not in the batch"
        );
    }
}

#[test]
fn decode_matches_reference_every_dtype() {
    for_each_dtype!(scrambled_slots);
}

#[test]
fn decode_with_paper_head_shape() {
    // K = 256, V = 512 (the paper's head) at batch 2: the 4-row vector path without tails.
    let (n, h, dk, dv) = (2usize, 2usize, 256usize, 512usize);
    let p = params(h, None);
    let mut pool = random_state(7, &[3, h, dk, dv]);
    let mut pool_ref = pool.to_f64();
    let q: HostTensor<f32> = random(8, &[n, h, dk]);
    let k: HostTensor<f32> = random(9, &[n, h, dk]);
    let v: HostTensor<f32> = random(10, &[n, h, dv]);
    let o = cpu::decode_step(&q, &k, &v, &mut pool, &[2, 0], &p).unwrap();
    let o_ref = reference::decode_step(
        &q.to_f64(),
        &k.to_f64(),
        &v.to_f64(),
        &mut pool_ref,
        &[2, 0],
        &p,
    )
    .unwrap();
    assert_matches("decode o (256, 512)", &o, &o_ref);
    assert_state("decode pool (256, 512)", &pool, &pool_ref);
}
