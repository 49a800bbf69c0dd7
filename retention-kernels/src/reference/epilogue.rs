//! The MultiScaleRetention epilogue: o ← RMSNorm_head(o) ⊙ swish(g), before W_O.

use retention_core::{HostTensor, Result, RetentionError};

/// Per (token, head): `o / sqrt(mean(o²) + eps)` over the V entries of that head (no affine
/// weight, as torchscale's group norm), times `g · sigmoid(g)` elementwise. `o` and `g` are
/// `[B, T, H, V]`.
///
/// # Errors
/// Shape mismatch between o and g, a rank other than 4, or a negative / non-finite eps.
pub fn msr_epilogue(o: &HostTensor<f64>, g: &HostTensor<f64>, eps: f64) -> Result<HostTensor<f64>> {
    let shape = o.shape();
    if shape.len() != 4 {
        return Err(RetentionError::ShapeMismatch {
            tensor: "o".into(),
            expected: "rank 4 [B, T, H, V]".into(),
            got: format!("rank {} {shape:?}", shape.len()),
        });
    }
    g.expect_shape("g", &["B", "T", "H", "V"], shape)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(RetentionError::Unsupported {
            what: "RMSNorm eps".into(),
            value: eps.to_string(),
            reason: "must be finite and >= 0".into(),
        });
    }
    let dv = shape[3];
    let mut out = HostTensor::zeros(shape.to_vec());
    for ((orow, grow), dst) in o
        .data()
        .chunks(dv)
        .zip(g.data().chunks(dv))
        .zip(out.data_mut().chunks_mut(dv))
    {
        let ms = orow.iter().map(|x| x * x).sum::<f64>() / dv as f64;
        let denom = (ms + eps).sqrt();
        // An all-zero head with eps = 0 normalises to 0, not NaN.
        let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
        for ((d, &x), &gi) in dst.iter_mut().zip(orow).zip(grow) {
            let swish = gi / (1.0 + (-gi).exp());
            *d = x * inv * swish;
        }
    }
    Ok(out)
}
