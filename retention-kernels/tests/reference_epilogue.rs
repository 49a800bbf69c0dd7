//! The MultiScaleRetention epilogue: RMSNorm per (token, head), then ⊙ swish(g).

use retention_core::{HostTensor, SplitMix64};
use retention_kernels::reference::{max_abs_diff, msr_epilogue};

#[test]
fn epilogue_matches_hand_computation() {
    // One head of V = 2: o = (3, 4): mean square 12.5; g = (0, 1).
    let o = HostTensor::new(vec![1, 1, 1, 2], vec![3.0, 4.0]).unwrap();
    let g = HostTensor::new(vec![1, 1, 1, 2], vec![0.0, 1.0]).unwrap();
    let out = msr_epilogue(&o, &g, 0.0).unwrap();
    let swish1 = 1.0 / (1.0 + (-1.0f64).exp());
    assert_eq!(out.data()[0], 0.0);
    assert!((out.data()[1] - 4.0 / 12.5f64.sqrt() * swish1).abs() < 1e-15);
    let eps = 0.5;
    let out = msr_epilogue(&o, &g, eps).unwrap();
    assert!((out.data()[1] - 4.0 / 13.0f64.sqrt() * swish1).abs() < 1e-15);
}

/// PITFALLS #1: with eps = 0 the per-head norm is scale invariant per (token, head), which is
/// why raw retention and torchscale's normalised retention agree after it.
#[test]
fn epilogue_with_zero_eps_is_scale_invariant_per_head() {
    let (b, t, h, v) = (2, 3, 4, 5);
    let mut rng = SplitMix64::new(8);
    let o = HostTensor::new(vec![b, t, h, v], rng.vec(b * t * h * v)).unwrap();
    let g = HostTensor::new(vec![b, t, h, v], rng.vec(b * t * h * v)).unwrap();
    let mut scaled = o.clone();
    for (i, row) in scaled.data_mut().chunks_mut(v).enumerate() {
        let s = 0.01 + i as f64; // a different positive factor per (token, head)
        for x in row.iter_mut() {
            *x *= s;
        }
    }
    let a = msr_epilogue(&o, &g, 0.0).unwrap();
    let c = msr_epilogue(&scaled, &g, 0.0).unwrap();
    assert!(max_abs_diff(a.data(), c.data()) < 1e-14);
    let a = msr_epilogue(&o, &g, 1e-2).unwrap();
    let c = msr_epilogue(&scaled, &g, 1e-2).unwrap();
    assert!(
        max_abs_diff(a.data(), c.data()) > 1e-6,
        "eps > 0 breaks the invariance"
    );
}
