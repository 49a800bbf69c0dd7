//! Seeded random problems shared by the reference tests.
#![allow(dead_code)]

use retention_core::{HostTensor, SplitMix64};

/// q, k `[B,T,H,K]` and v `[B,T,H,V]` uniform in [-1, 1).
pub fn qkv(
    seed: u64,
    (b, t, h, k, v): (usize, usize, usize, usize, usize),
) -> (HostTensor<f64>, HostTensor<f64>, HostTensor<f64>) {
    let mut rng = SplitMix64::new(seed);
    let q = HostTensor::new(vec![b, t, h, k], rng.vec(b * t * h * k)).unwrap();
    let kk = HostTensor::new(vec![b, t, h, k], rng.vec(b * t * h * k)).unwrap();
    let vv = HostTensor::new(vec![b, t, h, v], rng.vec(b * t * h * v)).unwrap();
    (q, kk, vv)
}

/// A random state `[rows, H, K, V]`.
pub fn state(seed: u64, rows: usize, h: usize, k: usize, v: usize) -> HostTensor<f64> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    HostTensor::new(vec![rows, h, k, v], rng.vec(rows * h * k * v)).unwrap()
}

/// Tokens `range` of a `[B,T,H,D]` tensor as a new `[B,len,H,D]` tensor.
pub fn slice_t(x: &HostTensor<f64>, range: std::ops::Range<usize>) -> HostTensor<f64> {
    let [b, t, h, d] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let mut data = Vec::new();
    for bi in 0..b {
        for ti in range.clone() {
            let o = ((bi * t + ti) * h) * d;
            data.extend_from_slice(&x.data()[o..o + h * d]);
        }
    }
    HostTensor::new(vec![b, range.len(), h, d], data).unwrap()
}

/// Concatenate two `[B,T,H,D]` tensors along T.
pub fn concat_t(a: &HostTensor<f64>, c: &HostTensor<f64>) -> HostTensor<f64> {
    let [b, t1, h, d] = <[usize; 4]>::try_from(a.shape()).unwrap();
    let t2 = c.shape()[1];
    let mut data = Vec::new();
    for bi in 0..b {
        data.extend_from_slice(&a.data()[bi * t1 * h * d..(bi + 1) * t1 * h * d]);
        data.extend_from_slice(&c.data()[bi * t2 * h * d..(bi + 1) * t2 * h * d]);
    }
    HostTensor::new(vec![b, t1 + t2, h, d], data).unwrap()
}

/// Heads `range` of a `[B,T,H,D]` (or `[B,H,K,V]` when `state` is set) tensor.
pub fn slice_h(x: &HostTensor<f64>, range: std::ops::Range<usize>, state: bool) -> HostTensor<f64> {
    let s = x.shape().to_vec();
    let (outer, h, inner) = if state {
        (s[0], s[1], s[2] * s[3])
    } else {
        (s[0] * s[1], s[2], s[3])
    };
    let mut data = Vec::new();
    for o in 0..outer {
        for hi in range.clone() {
            let off = (o * h + hi) * inner;
            data.extend_from_slice(&x.data()[off..off + inner]);
        }
    }
    let mut shape = s;
    shape[if state { 1 } else { 2 }] = range.len();
    HostTensor::new(shape, data).unwrap()
}

/// Assert `actual` equals `expected` within `tol` relative to max |expected| (at least 1).
pub fn assert_close(what: &str, actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let scale = expected.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
    let diff = retention_kernels::reference::max_abs_diff(actual, expected);
    assert!(
        diff <= tol * scale,
        "{what}: max abs diff {diff:e} > {tol:e} x {scale}"
    );
}
