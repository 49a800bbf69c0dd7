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
    // decays: H_T = γ^T · H0 exactly, for every head.
    let h = 32usize;
    let p = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let h0 = HostTensor::<f32>::new(vec![1, h, 1, 1], vec![1.0; h]).unwrap();
    // Returns (H_T per head from the kernel, γ_h^T in closed form from f64 log2 γ).
    let decayed = |t: usize, chunk: usize| {
        let zeros = HostTensor::<bf16>::zeros(vec![1, t, h, 1]);
        let (_, ht) = cpu::chunkwise(&zeros, &zeros, &zeros, &p, chunk, Some(&h0)).unwrap();
        // Heads ≥ 4 are the ones a bf16 γ freezes; here heads 4..=20 visibly decay.
        for head in 4..=20 {
            assert!(
                f64::from(ht.data()[head]) < 1.0 - 1e-4,
                "T {t}, head {head} stopped decaying"
            );
        }
        let want: Vec<f64> = (0..h)
            .map(|i| (t as f64 * p.gammas.log2(i)).exp2())
            .collect();
        (ht, want)
    };
    for chunk in [64usize, 256] {
        // T = 4096: every head within 1e-5 of its own γ^T.
        let (ht, ht_ref) = decayed(4096, chunk);
        for head in 0..h {
            let (got, want) = (f64::from(ht.data()[head]), ht_ref[head]);
            // Heads 0..2 decay below f32's normal range (γ^T ≈ 1e-57): compared absolutely.
            assert!(
                (got - want).abs() <= 1e-5 * want + 1e-37,
                "chunk {chunk}, head {head}: γ^T = {want}, got {got}"
            );
        }
        // T = 65536 (PITFALLS #2): no head overflows, underflows early or freezes. Here the
        // state has gone through T/C decays by an f32 γ^C, each off by up to 2⁻²⁴ relative
        // (rounding of γ^C, of exp2, of the product: < 2⁻²² together), the same error every
        // chunk — a bound of (T/C)·2⁻²² that any f32-state implementation shares, against
        // the 1e-5 ARCHITECTURE §4 tolerance that holds at T = 4096 above.
        let t = 65_536usize;
        let (ht, ht_ref) = decayed(t, chunk);
        let bound = (t / chunk) as f64 * 2f64.powi(-22);
        for head in 0..h {
            let (got, want) = (f64::from(ht.data()[head]), ht_ref[head]);
            assert!(
                got.is_finite() && (got - want).abs() <= bound * want + 1e-37,
                "T {t}, chunk {chunk}, head {head}: γ^T = {want}, got {got}"
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
