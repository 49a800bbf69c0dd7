//! Softmax attention of one query token over a KV cache (the Transformer decode step that
//! retention decode is compared with), written literally in f64:
//!
//! ```text
//! o[n,h] = Σ_t softmax_t(s · q[n,h]·k[n,h,t]) v[n,h,t]      (max-subtracted)
//! ```
//!
//! Layouts as `cpu::attention_decode`: q `[N, H, K]`, k_cache `[N, H, L, K]`, v_cache
//! `[N, H, L, V]` (head-major, each head's context contiguous); o `[N, H, V]`.

use retention_core::{HostTensor, Result, RetentionError, RetentionShape, check_shape};

use crate::validate::rank4;

const CACHE_K_AXES: [&str; 4] = ["N", "H", "L", "K"];
const CACHE_V_AXES: [&str; 4] = ["N", "H", "L", "V"];

/// One attention decode step for every (sequence, head); `scale` defaults to K^(-1/2).
///
/// # Errors
/// Rank or axis mismatches between q and the caches, a zero dimension, a non-finite scale.
pub fn attention_decode(
    q: &HostTensor<f64>,
    k_cache: &HostTensor<f64>,
    v_cache: &HostTensor<f64>,
    scale: Option<f64>,
) -> Result<HostTensor<f64>> {
    let qs = q.shape();
    let &[n, heads, dk] = qs else {
        return Err(RetentionError::ShapeMismatch {
            tensor: "q".into(),
            expected: "rank 3 [N, H, K]".into(),
            got: format!("rank {} {qs:?}", qs.len()),
        });
    };
    let [_, _, ctx, _] = rank4(k_cache.shape(), "k_cache", &CACHE_K_AXES)?;
    let [_, _, _, dv] = rank4(v_cache.shape(), "v_cache", &CACHE_V_AXES)?;
    check_shape(
        "k_cache",
        &CACHE_K_AXES,
        k_cache.shape(),
        &[n, heads, ctx, dk],
    )?;
    check_shape(
        "v_cache",
        &CACHE_V_AXES,
        v_cache.shape(),
        &[n, heads, ctx, dv],
    )?;
    RetentionShape::new(n, ctx, heads, dk, dv)?;
    let s = retention_core::validate_scale(scale, dk)?;
    let (kd, vd) = (k_cache.data(), v_cache.data());
    let mut o = vec![0.0; n * heads * dv];
    for nh in 0..n * heads {
        let qv = &q.data()[nh * dk..(nh + 1) * dk];
        let scores: Vec<f64> = (0..ctx)
            .map(|t| {
                let kt = &kd[(nh * ctx + t) * dk..(nh * ctx + t + 1) * dk];
                s * qv.iter().zip(kt).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = w.iter().sum();
        let out = &mut o[nh * dv..(nh + 1) * dv];
        for (t, wt) in w.iter().enumerate() {
            let vt = &vd[(nh * ctx + t) * dv..(nh * ctx + t + 1) * dv];
            for (oj, vj) in out.iter_mut().zip(vt) {
                *oj += wt / z * vj;
            }
        }
    }
    HostTensor::new(vec![n, heads, dv], o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scores_average_the_values_and_one_dominant_score_picks_its_value() {
        // Two tokens with equal keys: o is the mean of the values.
        let q = HostTensor::new(vec![1, 1, 2], vec![1.0, 0.0]).unwrap();
        let k = HostTensor::new(vec![1, 1, 2, 2], vec![1.0, 0.0, 1.0, 0.0]).unwrap();
        let v = HostTensor::new(vec![1, 1, 2, 1], vec![2.0, 4.0]).unwrap();
        let o = attention_decode(&q, &k, &v, None).unwrap();
        assert!((o.data()[0] - 3.0).abs() < 1e-15);
        // A huge scale makes the larger score win outright (and must not overflow).
        let k = HostTensor::new(vec![1, 1, 2, 2], vec![1.0, 0.0, 2.0, 0.0]).unwrap();
        let o = attention_decode(&q, &k, &v, Some(1e4)).unwrap();
        assert_eq!(o.data()[0], 4.0);
    }

    #[test]
    fn a_cache_in_the_wrong_layout_is_a_shape_error() {
        let q = HostTensor::<f64>::zeros(vec![2, 3, 4]);
        let k = HostTensor::<f64>::zeros(vec![2, 5, 3, 4]); // [N, L, H, K]
        let v = HostTensor::<f64>::zeros(vec![2, 3, 5, 4]);
        assert!(matches!(
            attention_decode(&q, &k, &v, None),
            Err(RetentionError::ShapeMismatch { .. })
        ));
    }
}
