//! Input checks shared by the CPU kernels. They accept and reject exactly what the f64
//! reference does, with the same error variants (named axes in shape errors).

use retention_core::{Element, HostTensor, Result, RetentionShape, TensorView};

use crate::reference::RetentionParams;

pub(crate) use crate::validate::rank4;
pub(crate) use crate::validate::{STATE_AXES, VO_AXES, check_packed, check_slots, decode_rows};
pub(crate) use retention_core::check_shape as expect_shape;

/// A validated problem: its shape, log2 γ per head (from f64, narrowed once to f32) and the
/// resolved scale.
#[derive(Debug, Clone)]
pub(crate) struct Dims {
    pub shape: RetentionShape,
    pub log2g: Vec<f32>,
    pub scale: f32,
}

/// Check q `[B,T,H,K]`, k (same) and v `[B,T,H,V]` against each other and the params.
pub(crate) fn check_qkv<T: Element>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
) -> Result<Dims> {
    check_qkv_shapes(q.shape(), k.shape(), v.shape(), params)
}

/// [`check_qkv`] on borrowed tensors.
pub(crate) fn check_qkv_views<T: Element>(
    q: &TensorView<'_, T>,
    k: &TensorView<'_, T>,
    v: &TensorView<'_, T>,
    params: &RetentionParams,
) -> Result<Dims> {
    check_qkv_shapes(q.shape(), k.shape(), v.shape(), params)
}

/// [`check_qkv`] on bare shapes.
pub(crate) fn check_qkv_shapes(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    params: &RetentionParams,
) -> Result<Dims> {
    let (shape, scale) = crate::validate::check_qkv_shapes(q, k, v, params)?;
    let scale = scale as f32;
    let log2g = (0..shape.heads)
        .map(|i| params.gammas.log2(i) as f32)
        .collect();
    Ok(Dims {
        shape,
        log2g,
        scale,
    })
}

/// Check an optional borrowed state `[rows, H, K, V]`.
pub(crate) fn check_state_view(
    h0: Option<&TensorView<'_, f32>>,
    shape: &RetentionShape,
    rows: usize,
) -> Result<()> {
    match h0 {
        Some(s) => expect_shape("h0", &STATE_AXES, s.shape(), &shape.state_shape(rows)),
        None => Ok(()),
    }
}

/// Check an optional state `[rows, H, K, V]`.
pub(crate) fn check_state(
    h0: Option<&HostTensor<f32>>,
    shape: &RetentionShape,
    rows: usize,
) -> Result<()> {
    match h0 {
        Some(s) => s.expect_shape("h0", &STATE_AXES, &shape.state_shape(rows)),
        None => Ok(()),
    }
}

/// γ^n for n = 0..=n_max as `exp2(n · log2 γ)` in f32: relative exponents only, so nothing
/// overflows and far terms underflow to exactly 0.
pub(crate) fn decay_table(log2g: f32, n_max: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend((0..=n_max).map(|n| (n as f32 * log2g).exp2()));
}
