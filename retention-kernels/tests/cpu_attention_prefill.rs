//! The causal softmax-attention prefill (the Transformer's time to first token) against a
//! direct f64 causal softmax: f32, f16 and bf16 inputs, prompts shorter than, equal to and
//! not a multiple of the kernel's block, a non-default scale, large logits, and its last
//! position against the decode kernel over the same cache.

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, random};
use retention_core::{HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

/// o[n,t,h] = Σ_{u≤t} softmax_u(s · q_t·k_u) v_u in f64, position by position.
fn causal_f64(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    s: f64,
) -> HostTensor<f64> {
    let [n, t, h, dk] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let dv = v.shape()[3];
    let at = |b: usize, pos: usize, head: usize, d: usize| ((b * t + pos) * h + head) * d;
    let mut o = vec![0.0; n * t * h * dv];
    for b in 0..n {
        for head in 0..h {
            for pos in 0..t {
                let qv = &q.data()[at(b, pos, head, dk)..][..dk];
                let scores: Vec<f64> = (0..=pos)
                    .map(|u| {
                        let ku = &k.data()[at(b, u, head, dk)..][..dk];
                        s * qv.iter().zip(ku).map(|(x, y)| x * y).sum::<f64>()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = w.iter().sum();
                let out = at(b, pos, head, dv);
                for (u, wu) in w.iter().enumerate() {
                    let vu = &v.data()[at(b, u, head, dv)..][..dv];
                    for (j, vj) in vu.iter().enumerate() {
                        o[out + j] += wu / z * vj;
                    }
                }
            }
        }
    }
    HostTensor::new(vec![n, t, h, dv], o).unwrap()
}

fn prompts<T: CpuElement>() {
    let (n, h, dk, dv) = (2usize, 3usize, 20usize, 12usize);
    // 1: one token; 64: exactly one block; 150: three blocks, the last partial.
    for (t, scale) in [(1usize, None), (64, Some(0.3)), (150, Some(2.0))] {
        let x = Qkv::<T>::new(40 + t as u64, (n, t, h, dk, dv));
        let o = cpu::attention_prefill(&x.q, &x.k, &x.v, scale).unwrap();
        let s = scale.unwrap_or(1.0 / (dk as f64).sqrt());
        let (q, k, v) = x.f64();
        assert_matches(&format!("prefill, T = {t}"), &o, &causal_f64(&q, &k, &v, s));
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
    assert_matches("prefill, huge logits", &o, &causal_f64(&q, &k, &v, 100.0));
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
