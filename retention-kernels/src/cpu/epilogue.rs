//! The MultiScaleRetention epilogue o ← RMSNorm_head(o) ⊙ swish(g), in f32.

use rayon::prelude::*;
use retention_core::{HostTensor, Result, RetentionError, TensorView, TensorViewMut};

use super::element::CpuElement;
use super::validate::{VO_AXES, expect_shape, rank4};

/// Rows (one token-head each) per parallel task.
const ROWS_PER_TASK: usize = 64;

/// Per (token, head): `o / sqrt(mean(o²) + eps)` over the V entries of that head, times
/// `g · sigmoid(g)`; `o`, `g` `[B, T, H, V]`. Computed in f32 and narrowed once at the end,
/// so f16 outputs stay in range however large raw retention grew.
///
/// # Errors
/// As [`crate::reference::msr_epilogue`]: rank other than 4, o/g mismatch, eps negative or
/// not finite.
pub fn msr_epilogue<T: CpuElement>(
    o: &HostTensor<T>,
    g: &HostTensor<T>,
    eps: f64,
) -> Result<HostTensor<T>> {
    let mut out = HostTensor::<T>::zeros(o.shape().to_vec());
    msr_epilogue_into(o.view(), g.view(), eps, out.view_mut())?;
    Ok(out)
}

/// [`msr_epilogue`] into a caller's `out` (same shape as o; every element written).
///
/// # Errors
/// As [`msr_epilogue`], plus an `out` of the wrong shape.
pub fn msr_epilogue_into<T: CpuElement>(
    o: TensorView<'_, T>,
    g: TensorView<'_, T>,
    eps: f64,
    mut out: TensorViewMut<'_, T>,
) -> Result<()> {
    let [_, _, _, dv] = rank4(o.shape(), "o", &VO_AXES)?;
    expect_shape("g", &VO_AXES, g.shape(), o.shape())?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(RetentionError::Unsupported {
            what: "RMSNorm eps".into(),
            value: eps.to_string(),
            reason: "must be finite and >= 0".into(),
        });
    }
    expect_shape("out", &VO_AXES, out.shape(), o.shape())?;
    let eps = eps as f32;
    let block = ROWS_PER_TASK * dv.max(1);
    out.data_mut()
        .par_chunks_mut(block)
        .zip(o.data().par_chunks(block))
        .zip(g.data().par_chunks(block))
        .for_each_init(
            || (vec![0.0f32; dv], vec![0.0f32; dv]),
            |(of, gf), ((dst, src), gate)| {
                for ((drow, orow), grow) in
                    dst.chunks_mut(dv).zip(src.chunks(dv)).zip(gate.chunks(dv))
                {
                    T::load_f32(orow, of);
                    T::load_f32(grow, gf);
                    let ms = super::simd::dot(of, of) / dv as f32;
                    let denom = (ms + eps).sqrt();
                    // An all-zero head with eps = 0 normalises to 0, not NaN.
                    let inv = if denom > 0.0 { 1.0 / denom } else { 0.0 };
                    for (x, &gi) in of.iter_mut().zip(gf.iter()) {
                        *x *= inv * (gi / (1.0 + (-gi).exp()));
                    }
                    T::store_f32(of, drow);
                }
            },
        );
    Ok(())
}
