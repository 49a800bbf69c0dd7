//! The causal softmax-attention prefill (the Transformer's time to first token) against the
//! f64 reference (`reference::attention_prefill`, a direct causal softmax): f32, f16 and
//! bf16 inputs, prompts shorter than, equal to and not a multiple of the kernel's block, a
//! non-default scale, large logits, and its last position against the decode kernel over the
//! same cache.

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, random};
use retention_core::{HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference;

fn prompts<T: CpuElement>() {
    let (n, h, dk, dv) = (2usize, 3usize, 20usize, 12usize);
    // 1: one token; 64: exactly one block; 150: three blocks, the last partial.
    for (t, scale) in [(1usize, None), (64, Some(0.3)), (150, Some(2.0))] {
        let x = Qkv::<T>::new(40 + t as u64, (n, t, h, dk, dv));
        let o = cpu::attention_prefill(&x.q, &x.k, &x.v, scale).unwrap();
        let s = scale.unwrap_or(1.0 / (dk as f64).sqrt());
        let (q, k, v) = x.f64();
        assert_matches(
            &format!("prefill, T = {t}"),
            &o,
            &reference::attention_prefill(&q, &k, &v, Some(s)).unwrap(),
        );
    }
}

#[test]
fn prefill_matches_f64_causal_softmax_every_dtype() {
    for_each_dtype!(prompts);
}

#[test]
fn prefill_survives_logits_that_overflow_exp() {
    let x = Qkv::<f32>::new(7, (1, 130, 2, 16, 8));
    let o = cpu::attention_prefill(&x.q, &x.k, &x.v, Some(100.0)).unwrap();
    assert!(o.data().iter().all(|v| v.is_finite()));
    let (q, k, v) = x.f64();
    assert_matches(
        "prefill, huge logits",
        &o,
        &reference::attention_prefill(&q, &k, &v, Some(100.0)).unwrap(),
    );
}

/// `[N, T, H, D]` → `[N, H, T, D]` (the decode kernel's cache layout).
fn to_cache(x: &HostTensor<f32>) -> HostTensor<f32> {
    let [n, t, h, d] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let mut out = vec![0.0f32; x.data().len()];
    for b in 0..n {
        for pos in 0..t {
            for head in 0..h {
                let src = ((b * t + pos) * h + head) * d;
                let dst = ((b * h + head) * t + pos) * d;
                out[dst..dst + d].copy_from_slice(&x.data()[src..src + d]);
            }
        }
    }
    HostTensor::new(vec![n, h, t, d], out).unwrap()
}

#[test]
fn last_prefill_position_equals_decode_over_the_same_cache() {
    let (n, t, h, dk, dv) = (2usize, 97usize, 2usize, 16usize, 24usize);
    let x = Qkv::<f32>::new(11, (n, t, h, dk, dv));
    let o = cpu::attention_prefill(&x.q, &x.k, &x.v, None).unwrap();
    let last: Vec<f32> = (0..n)
        .flat_map(|b| o.data()[((b * t + t - 1) * h) * dv..((b * t + t) * h) * dv].to_vec())
        .collect();
    let q_last: Vec<f32> = (0..n)
        .flat_map(|b| x.q.data()[((b * t + t - 1) * h) * dk..((b * t + t) * h) * dk].to_vec())
        .collect();
    let q_last = HostTensor::new(vec![n, h, dk], q_last).unwrap();
    let d = cpu::attention_decode(&q_last, &to_cache(&x.k), &to_cache(&x.v), None).unwrap();
    let want = HostTensor::new(vec![n, h, dv], d.to_f64().data().to_vec()).unwrap();
    let got = HostTensor::new(vec![n, h, dv], last).unwrap();
    assert_matches("last position vs decode", &got, &want);
}

#[test]
fn prefill_rejects_mismatched_inputs() {
    let q = HostTensor::<f32>::zeros(vec![2, 5, 3, 8]);
    let k = HostTensor::<f32>::zeros(vec![2, 5, 3, 8]);
    let v = HostTensor::<f32>::zeros(vec![2, 5, 3, 4]);
    assert!(cpu::attention_prefill(&q, &k, &v, None).is_ok());
    let head_first: HostTensor<f32> = random(1, &[2, 3, 5, 8]); // [B, H, T, K]
    assert!(matches!(
        cpu::attention_prefill(&q, &head_first, &v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let short_v = HostTensor::<f32>::zeros(vec![2, 4, 3, 4]);
    assert!(matches!(
        cpu::attention_prefill(&q, &k, &short_v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let rank3 = HostTensor::<f32>::zeros(vec![2, 5, 24]);
    assert!(matches!(
        cpu::attention_prefill(&rank3, &k, &v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let empty = HostTensor::<f32>::zeros(vec![2, 0, 3, 8]);
    let empty_v = HostTensor::<f32>::zeros(vec![2, 0, 3, 4]);
    assert!(matches!(
        cpu::attention_prefill(&empty, &empty, &empty_v, None),
        Err(RetentionError::ZeroDim { axis: "T" })
    ));
    assert!(matches!(
        cpu::attention_prefill(&q, &k, &v, Some(f64::INFINITY)),
        Err(RetentionError::InvalidScale(_))
    ));
}
