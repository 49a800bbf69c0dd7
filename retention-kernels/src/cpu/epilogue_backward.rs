//! Backward of the gated epilogue y = RMSNorm_head(o) ⊙ swish(g), in f32. Per (token, head)
//! row of V entries, r = (mean(o²) + eps)^(−1/2), σ the logistic function, u = dy ⊙ g σ(g):
//!
//! do = r u − (r³ / V) ⟨u, o⟩ o;   dg = dy ⊙ r o ⊙ σ(g) (1 + g (1 − σ(g))),
//!
//! with r = 0 on an all-zero row at eps = 0, as the forward ([`super::msr_epilogue`]).

use rayon::prelude::*;
use retention_core::{HostTensor, Result, RetentionError};

use super::element::CpuElement;
use super::validate::{VO_AXES, expect_shape};

/// Rows (one token-head each) per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Gradients of the gated epilogue in the input dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuEpilogueGradients<T: CpuElement> {
    /// dL/do `[B, T, H, V]`.
    pub d_o: HostTensor<T>,
    /// dL/dg `[B, T, H, V]`.
    pub dg: HostTensor<T>,
}

/// Gradients of [`super::msr_epilogue`] for the upstream gradient `dy` `[B, T, H, V]`,
/// computed in f32 and narrowed once.
///
/// # Errors
/// As [`super::msr_epilogue`], plus a shape mismatch of `dy`.
pub fn msr_epilogue_backward<T: CpuElement>(
    o: &HostTensor<T>,
    g: &HostTensor<T>,
    eps: f64,
    dy: &HostTensor<T>,
) -> Result<CpuEpilogueGradients<T>> {
    super::validate::rank4(o.shape(), "o", &VO_AXES)?;
    expect_shape("g", &VO_AXES, g.shape(), o.shape())?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(RetentionError::Unsupported {
            what: "RMSNorm eps".into(),
            value: eps.to_string(),
            reason: "must be finite and >= 0".into(),
        });
    }
    expect_shape("dy", &VO_AXES, dy.shape(), o.shape())?;
    let dv = o.shape()[3];
    let eps = eps as f32;
    let mut d_o = HostTensor::<T>::zeros(o.shape().to_vec());
    let mut dg = HostTensor::<T>::zeros(o.shape().to_vec());
    let block = ROWS_PER_TASK * dv.max(1);
    d_o.data_mut()
        .par_chunks_mut(block)
        .zip(dg.data_mut().par_chunks_mut(block))
        .zip(o.data().par_chunks(block))
        .zip(g.data().par_chunks(block).zip(dy.data().par_chunks(block)))
        .for_each_init(
            || [vec![0.0f32; dv], vec![0.0f32; dv], vec![0.0f32; dv]],
            |[of, gf, yf], (((do_blk, dg_blk), o_blk), (g_blk, dy_blk))| {
                let rows = do_blk.chunks_mut(dv).zip(dg_blk.chunks_mut(dv)).zip(
                    o_blk
                        .chunks(dv)
                        .zip(g_blk.chunks(dv))
                        .zip(dy_blk.chunks(dv)),
                );
                for ((do_row, dg_row), ((orow, grow), dyrow)) in rows {
                    T::load_f32(orow, of);
                    T::load_f32(grow, gf);
                    T::load_f32(dyrow, yf);
                    let ms = super::simd::dot(of, of) / dv as f32;
                    let denom = (ms + eps).sqrt();
                    let r = if denom > 0.0 { 1.0 / denom } else { 0.0 };
                    let mut u_dot_o = 0.0f32;
                    // gf ← σ(g) (1 + g (1 − σ(g))) · dy r o (= dg); yf ← u = dy g σ(g).
                    for ((x, gi), yi) in of.iter().zip(gf.iter_mut()).zip(yf.iter_mut()) {
                        let sig = 1.0 / (1.0 + (-*gi).exp());
                        let u = *yi * *gi * sig;
                        u_dot_o += u * x;
                        *gi = *yi * r * x * sig * (1.0 + *gi * (1.0 - sig));
                        *yi = u;
                    }
                    let c = r * r * r * u_dot_o / dv as f32;
                    for (x, u) in of.iter_mut().zip(yf.iter()) {
                        *x = r * u - c * *x;
                    }
                    T::store_f32(of, do_row);
                    T::store_f32(gf, dg_row);
                }
            },
        );
    Ok(CpuEpilogueGradients { d_o, dg })
}
