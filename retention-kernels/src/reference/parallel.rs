//! Parallel form: O = s·((Q Kᵀ) ⊙ D) V with D[n,m] = γ^(n−m) for n ≥ m, else 0.

use retention_core::{HostTensor, Result};

use super::decay::decay;
use super::problem::{Problem, RetentionParams, axpy, dot};

/// Parallel retention (no initial or final state). Returns o `[B, T, H, V]`.
///
/// # Errors
/// Shape mismatches between q, k, v; gammas not matching H; a non-finite scale.
pub fn parallel(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
) -> Result<HostTensor<f64>> {
    let p = Problem::new(q, k, v, params)?;
    let s = p.shape;
    let mut o = HostTensor::zeros(s.vo_shape());
    let out = o.data_mut();
    for b in 0..s.batch {
        for h in 0..s.heads {
            for n in 0..s.seq_len {
                let qn = p.q_at(b, n, h);
                let off = p.o_offset(b, n, h);
                let on = &mut out[off..off + s.dv];
                for m in 0..=n {
                    let w = p.scale * dot(qn, p.k_at(b, m, h)) * decay(p.log2g[h], n - m);
                    axpy(on, w, p.v_at(b, m, h));
                }
            }
        }
    }
    Ok(o)
}
