//! Causal softmax attention of a whole prompt (the Transformer's prefill, which RetNet's
//! chunkwise prefill is compared with), written literally in f64, position by position:
//!
//! ```text
//! o[n,t,h] = Σ_{u ≤ t} softmax_u(s · q[n,t,h]·k[n,u,h]) v[n,u,h]      (max-subtracted)
//! ```
//!
//! Layouts as `cpu::attention_prefill` (token-major, as projections produce them): q, k
//! `[N, T, H, K]`, v and o `[N, T, H, V]`.

use retention_core::{HostTensor, Result};

use crate::validate::check_qkv_layout;

/// Causal attention of every prompt position; `scale` defaults to K^(-1/2).
///
/// # Errors
/// Rank or axis mismatches between q, k and v, a zero dimension, a non-finite scale.
pub fn attention_prefill(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    scale: Option<f64>,
) -> Result<HostTensor<f64>> {
    let shape = check_qkv_layout(q.shape(), k.shape(), v.shape())?;
    let (n, t, h, dk, dv) = (shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv);
    let s = retention_core::validate_scale(scale, dk)?;
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
                    for (oj, vj) in o[out..out + dv].iter_mut().zip(vu) {
                        *oj += wu / z * vj;
                    }
                }
            }
        }
    }
    HostTensor::new(vec![n, t, h, dv], o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::attention_decode;
    use retention_core::{RetentionError, SplitMix64};

    #[test]
    fn the_first_position_sees_only_itself_and_the_last_equals_decode_over_the_prompt() {
        let (t, h, dk, dv) = (6usize, 2usize, 3usize, 4usize);
        let mut rng = SplitMix64::new(3);
        let q = HostTensor::new(vec![1, t, h, dk], rng.vec(t * h * dk)).unwrap();
        let k = HostTensor::new(vec![1, t, h, dk], rng.vec(t * h * dk)).unwrap();
        let v = HostTensor::new(vec![1, t, h, dv], rng.vec(t * h * dv)).unwrap();
        let o = attention_prefill(&q, &k, &v, Some(0.7)).unwrap();
        assert_eq!(&o.data()[..h * dv], &v.data()[..h * dv]);
        // [1, T, H, D] → [1, H, T, D], the decode kernel's cache layout.
        let cache = |x: &HostTensor<f64>, d: usize| {
            let data = (0..h)
                .flat_map(|head| (0..t).map(move |u| (u, head)))
                .flat_map(|(u, head)| x.data()[(u * h + head) * d..][..d].to_vec())
                .collect();
            HostTensor::new(vec![1, h, t, d], data).unwrap()
        };
        let q_last = HostTensor::new(vec![1, h, dk], q.data()[(t - 1) * h * dk..].to_vec());
        let d = attention_decode(&q_last.unwrap(), &cache(&k, dk), &cache(&v, dv), Some(0.7));
        for (a, b) in o.data()[(t - 1) * h * dv..].iter().zip(d.unwrap().data()) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
    }

    #[test]
    fn a_head_first_layout_is_a_shape_error() {
        let q = HostTensor::<f64>::zeros(vec![2, 5, 3, 4]);
        let k = HostTensor::<f64>::zeros(vec![2, 3, 5, 4]); // [B, H, T, K]
        assert!(matches!(
            attention_prefill(&q, &k, &q, None),
            Err(RetentionError::ShapeMismatch { .. })
        ));
    }
}
