//! Backward of the parallel form O = s·((Q Kᵀ) ⊙ D) V, D(n, m) = γ^{n−m} (n ≥ m), written
//! from its own equation (no state): with M = (s dO Vᵀ) ⊙ D and P = (s Q Kᵀ) ⊙ D,
//!
//! dQ = M K;  dK = Mᵀ Q;  dV = Pᵀ dO;  dL/dlog γ = Σ_{n≥m} (n−m) M_nm (Q Kᵀ)_nm,
//!
//! since d γ^{n−m} / d log γ = (n−m) γ^{n−m}. O(T²) per (row, head): small problems only.

use retention_core::{HostTensor, Result};

use super::decay::decay;
use super::problem::{Problem, RetentionParams, axpy, dot};

/// Gradients of the parallel form (which has no initial or final state).
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelGradients {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<f64>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<f64>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<f64>,
    /// dL/dlog γ_h `[H]`, summed over rows and tokens.
    pub dlog_gamma: HostTensor<f64>,
}

/// Gradients of [`super::parallel`] for the upstream gradient `d_o` `[B, T, H, V]`.
///
/// # Errors
/// As [`super::parallel`], plus a shape mismatch of `d_o`.
pub fn parallel_backward(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
    d_o: &HostTensor<f64>,
) -> Result<ParallelGradients> {
    let p = Problem::new(q, k, v, params)?;
    let s = p.shape;
    d_o.expect_shape("d_o", &["B", "T", "H", "V"], &s.vo_shape())?;
    let (dk_len, dv_len) = (s.dk, s.dv);
    let mut dq = vec![0.0; p.q.len()];
    let mut dk = vec![0.0; p.k.len()];
    let mut dv = vec![0.0; p.v.len()];
    let mut dlog_gamma = vec![0.0; s.heads];
    let qk_off = |b: usize, t: usize, h: usize| ((b * s.seq_len + t) * s.heads + h) * s.dk;
    for b in 0..s.batch {
        for h in 0..s.heads {
            for n in 0..s.seq_len {
                let qn = p.q_at(b, n, h);
                let don = &d_o.data()[p.o_offset(b, n, h)..][..dv_len];
                for m in 0..=n {
                    let (km, vm) = (p.k_at(b, m, h), p.v_at(b, m, h));
                    let d = decay(p.log2g[h], n - m);
                    let mnm = p.scale * dot(don, vm) * d;
                    let score = dot(qn, km);
                    dlog_gamma[h] += (n - m) as f64 * mnm * score;
                    let (qo_n, qo_m) = (qk_off(b, n, h), qk_off(b, m, h));
                    axpy(&mut dq[qo_n..qo_n + dk_len], mnm, km);
                    axpy(&mut dk[qo_m..qo_m + dk_len], mnm, qn);
                    let vo = p.o_offset(b, m, h);
                    axpy(&mut dv[vo..vo + dv_len], p.scale * score * d, don);
                }
            }
        }
    }
    Ok(ParallelGradients {
        dq: HostTensor::new(s.qk_shape(), dq)?,
        dk: HostTensor::new(s.qk_shape(), dk)?,
        dv: HostTensor::new(s.vo_shape(), dv)?,
        dlog_gamma: HostTensor::new(vec![s.heads], dlog_gamma)?,
    })
}
