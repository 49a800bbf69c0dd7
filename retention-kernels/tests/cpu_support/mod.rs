//! Shared helpers of the CPU-kernel tests: seeded problems in every dtype, the reference run
//! on the dtype-rounded inputs, and the ARCHITECTURE §4 tolerances.

#![allow(dead_code)]

use retention_core::{Dtype, Element, Gammas, HostTensor, SplitMix64};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::{RetentionParams, max_rel_diff, rel_rmse};

/// f32 outputs: max |actual − reference| / max |reference|.
pub const F32_REL: f64 = 1e-5;
/// f16 / bf16 outputs: relative RMSE.
pub const HALF_RMSE: f64 = 5e-3;

/// A seeded tensor of values uniform in [−1, 1), rounded to `T`.
pub fn random<T: Element>(seed: u64, shape: &[usize]) -> HostTensor<T> {
    let mut rng = SplitMix64::new(seed);
    HostTensor::from_f64(shape.to_vec(), &rng.vec(shape.iter().product())).unwrap()
}

/// A seeded f32 state tensor.
pub fn random_state(seed: u64, shape: &[usize]) -> HostTensor<f32> {
    random(seed, shape)
}

/// q `[B,T,H,K]`, k, v `[B,T,H,V]` in `T`, plus their exact f64 values.
pub struct Qkv<T: Element> {
    pub q: HostTensor<T>,
    pub k: HostTensor<T>,
    pub v: HostTensor<T>,
}

impl<T: Element> Qkv<T> {
    /// Seeded inputs of shape (B, T, H, K, V).
    pub fn new(seed: u64, (b, t, h, k, v): (usize, usize, usize, usize, usize)) -> Self {
        Self {
            q: random(seed, &[b, t, h, k]),
            k: random(seed + 1, &[b, t, h, k]),
            v: random(seed + 2, &[b, t, h, v]),
        }
    }

    /// The same inputs widened to f64 exactly (the reference sees what the kernel saw).
    pub fn f64(&self) -> (HostTensor<f64>, HostTensor<f64>, HostTensor<f64>) {
        (self.q.to_f64(), self.k.to_f64(), self.v.to_f64())
    }
}

/// RetNet decays with a non-default scale (scale bugs show up only when scale ≠ 1/√K).
pub fn params(h: usize, scale: Option<f64>) -> RetentionParams {
    RetentionParams::new(Gammas::retnet(h).unwrap(), scale)
}

/// Assert `actual` (in `T`) matches the f64 `reference` within the tolerance of `T`.
pub fn assert_matches<T: CpuElement>(
    what: &str,
    actual: &HostTensor<T>,
    reference: &HostTensor<f64>,
) {
    assert_eq!(actual.shape(), reference.shape(), "{what}: shape");
    let a = actual.to_f64();
    let scale = reference.data().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(
        scale > 0.0,
        "{what}: reference is all zero — the test would prove nothing"
    );
    if T::DTYPE == Some(Dtype::F32) {
        let e = max_rel_diff(a.data(), reference.data());
        assert!(
            e <= F32_REL,
            "{what} (f32): max rel diff {e:.3e} > {F32_REL:e}"
        );
    } else {
        let e = rel_rmse(a.data(), reference.data());
        let d = T::DTYPE.map_or("?", Dtype::name);
        assert!(
            e <= HALF_RMSE,
            "{what} ({d}): rel RMSE {e:.3e} > {HALF_RMSE:e}"
        );
    }
}

/// Assert an f32 state matches the reference state (f32 in every dtype: 1e-5 relative).
pub fn assert_state(what: &str, actual: &HostTensor<f32>, reference: &HostTensor<f64>) {
    assert_matches::<f32>(what, actual, reference);
}

/// Run `body` once per input dtype.
#[allow(unused_macros)]
macro_rules! for_each_dtype {
    ($body:ident) => {
        $body::<f32>();
        $body::<half::f16>();
        $body::<half::bf16>();
    };
}
