//! PITFALLS #5: with bf16 inputs every RetNet head must still decay. torchscale after
//! `model.bfloat16()` rounds γ ≥ 1 − 2⁻⁹ to 1, so heads ≥ 4 stop decaying; we keep log2 γ in
//! f32 from f64 and never build γ in 16 bits.

mod cpu_support;

use cpu_support::{Qkv, assert_matches, assert_state};
use half::bf16;
use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu;
use retention_kernels::reference::{self, RetentionParams};

#[test]
fn bf16_inputs_slow_retnet_heads_still_decay() {
    // H = 32 RetNet heads (γ up to 1 − 2⁻³⁶), K = V = 1: with k = v = 0 the state only
    // decays, H_T = γ^T · H0 exactly, and the reference gives that number for every head.
    let (t, h) = (4096usize, 32usize);
    let p = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let zeros = HostTensor::<bf16>::zeros(vec![1, t, h, 1]);
    let h0 = HostTensor::<f32>::new(vec![1, h, 1, 1], vec![1.0; h]).unwrap();
    for chunk in [64usize, 256] {
        let (_, ht) = cpu::chunkwise(&zeros, &zeros, &zeros, &p, chunk, Some(&h0)).unwrap();
        let z = zeros.to_f64();
        let (_, ht_ref) = reference::chunkwise(&z, &z, &z, &p, chunk, Some(&h0.to_f64())).unwrap();
        for head in 0..h {
            let (got, want) = (f64::from(ht.data()[head]), ht_ref.data()[head]);
            // Heads 0..2 decay below f32's normal range (γ^T ≈ 1e-57): compared absolutely.
            assert!(
                (got - want).abs() <= 1e-5 * want + 1e-37,
                "chunk {chunk}, head {head}: γ^T = {want}, got {got}"
            );
        }
        // Heads 4..=16 are the ones a bf16 γ freezes; here they visibly decay (γ^T < 1 − 1e-4).
        for head in 4..=16 {
            assert!(
                f64::from(ht.data()[head]) < 1.0 - 1e-4,
                "head {head} stopped decaying"
            );
        }
    }
    // The same with real bf16 inputs: outputs and states of all 32 heads match the reference.
    let x = Qkv::<bf16>::new(101, (1, 600, h, 4, 4));
    let (q, k, v) = x.f64();
    let (o, ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, 64, None).unwrap();
    let (o_ref, ht_ref) = reference::chunkwise(&q, &k, &v, &p, 64, None).unwrap();
    assert_matches("bf16, 32 heads, o", &o, &o_ref);
    assert_state("bf16, 32 heads, H_T", &ht, &ht_ref);
}

#[test]
fn bf16_decode_steps_decay_slow_heads() {
    // 64 decode steps with k = v = 0 from H0 = 1: the state of head h is γ_h^64.
    let h = 16usize;
    let p = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let zeros = HostTensor::<bf16>::zeros(vec![1, h, 1]);
    let mut pool = HostTensor::<f32>::new(vec![1, h, 1, 1], vec![1.0; h]).unwrap();
    for _ in 0..64 {
        cpu::decode_step(&zeros, &zeros, &zeros, &mut pool, &[0], &p).unwrap();
    }
    for head in 0..h {
        let want = p.gammas.get(head).powi(64);
        let got = f64::from(pool.data()[head]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "head {head}: want {want}, got {got}"
        );
        if head <= 12 {
            assert!(got < 1.0 - 1e-5, "head {head} stopped decaying");
        }
    }
}
