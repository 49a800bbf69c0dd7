//! The softmax-attention decode baseline against a direct f64 softmax: f32, f16 and bf16
//! caches, contexts that are not multiples of the split or the tile, large logits.

#[macro_use]
mod cpu_support;

use cpu_support::{assert_matches, random};
use retention_core::{HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

/// o[n,h] = Σ_t softmax_t(s · q·k_t) v_t, in f64, the textbook way (max-subtracted).
fn attention_f64(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    s: f64,
) -> HostTensor<f64> {
    let [n, h, l, dk] = [k.shape()[0], k.shape()[1], k.shape()[2], k.shape()[3]];
    let dv = v.shape()[3];
    let mut o = vec![0.0; n * h * dv];
    for nh in 0..n * h {
        let qv = &q.data()[nh * dk..(nh + 1) * dk];
        let scores: Vec<f64> = (0..l)
            .map(|t| {
                let kt = &k.data()[(nh * l + t) * dk..(nh * l + t + 1) * dk];
                s * qv.iter().zip(kt).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = w.iter().sum();
        for t in 0..l {
            for j in 0..dv {
                o[nh * dv + j] += w[t] / z * v.data()[(nh * l + t) * dv + j];
            }
        }
    }
    HostTensor::new(vec![n, h, dv], o).unwrap()
}

fn contexts<T: CpuElement>() {
    let (n, h, dk, dv) = (2usize, 3usize, 20usize, 12usize);
    // 1: a single token; 45: one partial tile; 1100: three splits, the last partial.
    for (ctx, scale) in [(1usize, None), (45, Some(0.3)), (1100, Some(4.0))] {
        let q: HostTensor<T> = random(81, &[n, h, dk]);
        let k: HostTensor<T> = random(82, &[n, h, ctx, dk]);
        let v: HostTensor<T> = random(83, &[n, h, ctx, dv]);
        let o = cpu::attention_decode(&q, &k, &v, scale).unwrap();
        let s = scale.unwrap_or(1.0 / (dk as f64).sqrt());
        let want = attention_f64(&q.to_f64(), &k.to_f64(), &v.to_f64(), s);
        assert_matches(&format!("attention, context {ctx}"), &o, &want);
    }
}

#[test]
fn attention_matches_f64_softmax_every_dtype() {
    for_each_dtype!(contexts);
}

#[test]
fn attention_survives_logits_that_overflow_exp() {
    // Scores around ±400: exp would overflow f32 without the running max.
    let (ctx, dk, dv) = (700usize, 16usize, 8usize);
    let q: HostTensor<f32> = random(91, &[1, 1, dk]);
    let k: HostTensor<f32> = random(92, &[1, 1, ctx, dk]);
    let v: HostTensor<f32> = random(93, &[1, 1, ctx, dv]);
    let o = cpu::attention_decode(&q, &k, &v, Some(100.0)).unwrap();
    assert!(o.data().iter().all(|x| x.is_finite()));
    let want = attention_f64(&q.to_f64(), &k.to_f64(), &v.to_f64(), 100.0);
    assert_matches("attention, huge logits", &o, &want);
}

#[test]
fn attention_rejects_mismatched_caches() {
    let q = HostTensor::<f32>::zeros(vec![2, 3, 8]);
    let k = HostTensor::<f32>::zeros(vec![2, 3, 10, 8]);
    let v = HostTensor::<f32>::zeros(vec![2, 3, 10, 4]);
    assert!(cpu::attention_decode(&q, &k, &v, None).is_ok());
    let bad_k = HostTensor::<f32>::zeros(vec![2, 10, 3, 8]); // [N, L, H, K]: layout confusion
    assert!(matches!(
        cpu::attention_decode(&q, &bad_k, &v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let bad_v = HostTensor::<f32>::zeros(vec![2, 3, 9, 4]);
    assert!(matches!(
        cpu::attention_decode(&q, &k, &bad_v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let q3 = HostTensor::<f32>::zeros(vec![2, 3, 8, 1]);
    assert!(matches!(
        cpu::attention_decode(&q3, &k, &v, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    let empty_k = HostTensor::<f32>::zeros(vec![2, 3, 0, 8]);
    let empty_v = HostTensor::<f32>::zeros(vec![2, 3, 0, 4]);
    assert!(matches!(
        cpu::attention_decode(&q, &empty_k, &empty_v, None),
        Err(RetentionError::ZeroDim { axis: "T" })
    ));
    assert!(matches!(
        cpu::attention_decode(&q, &k, &v, Some(f64::NAN)),
        Err(RetentionError::InvalidScale(_))
    ));
}
