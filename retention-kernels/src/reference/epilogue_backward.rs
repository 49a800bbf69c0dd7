//! Backward of the gated epilogue y = RMSNorm_head(o) ⊙ swish(g) (see [`super::msr_epilogue`]).
//!
//! Per (token, head) row of V entries, with r = (mean(o²) + eps)^(−1/2), σ the logistic
//! function, swish(g) = g σ(g) and u = dy ⊙ swish(g):
//!
//! do = r u − (r³ / V) ⟨u, o⟩ o;   dg = dy ⊙ r o ⊙ σ(g) (1 + g (1 − σ(g))).
//!
//! Where the forward defines an all-zero row with eps = 0 as 0 (r = 0), the backward takes
//! r = 0 too: do = 0 and dg = 0 on that row.

use retention_core::{HostTensor, Result};

use super::epilogue::msr_epilogue;

/// Gradients of the gated epilogue with respect to its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EpilogueGradients {
    /// dL/do `[B, T, H, V]`.
    pub d_o: HostTensor<f64>,
    /// dL/dg `[B, T, H, V]`.
    pub dg: HostTensor<f64>,
}

/// Gradients of [`super::msr_epilogue`] for the upstream gradient `dy` `[B, T, H, V]`.
///
/// # Errors
/// As [`super::msr_epilogue`], plus a shape mismatch of `dy`.
pub fn msr_epilogue_backward(
    o: &HostTensor<f64>,
    g: &HostTensor<f64>,
    eps: f64,
    dy: &HostTensor<f64>,
) -> Result<EpilogueGradients> {
    // The forward's checks (rank, o/g shapes, eps) are this function's checks.
    msr_epilogue(o, g, eps)?;
    dy.expect_shape("dy", &["B", "T", "H", "V"], o.shape())?;
    let dv = o.shape()[3];
    let mut d_o = HostTensor::zeros(o.shape().to_vec());
    let mut dg = HostTensor::zeros(o.shape().to_vec());
    let rows = o
        .data()
        .chunks(dv)
        .zip(g.data().chunks(dv))
        .zip(dy.data().chunks(dv));
    let outs = d_o
        .data_mut()
        .chunks_mut(dv)
        .zip(dg.data_mut().chunks_mut(dv));
    for (((orow, grow), dyrow), (do_row, dg_row)) in rows.zip(outs) {
        let ms = orow.iter().map(|x| x * x).sum::<f64>() / dv as f64;
        let denom = (ms + eps).sqrt();
        let r = if denom > 0.0 { 1.0 / denom } else { 0.0 };
        let mut u_dot_o = 0.0;
        for (((&x, &gi), &dyi), dgi) in orow.iter().zip(grow).zip(dyrow).zip(dg_row.iter_mut()) {
            let sig = 1.0 / (1.0 + (-gi).exp());
            u_dot_o += dyi * gi * sig * x;
            *dgi = dyi * r * x * sig * (1.0 + gi * (1.0 - sig));
        }
        let c = r * r * r * u_dot_o / dv as f64;
        for (((&x, &gi), &dyi), doi) in orow.iter().zip(grow).zip(dyrow).zip(do_row.iter_mut()) {
            let sig = 1.0 / (1.0 + (-gi).exp());
            *doi = r * dyi * gi * sig - c * x;
        }
    }
    Ok(EpilogueGradients { d_o, dg })
}
