//! Input checks shared by the CPU kernels. They accept and reject exactly what the f64
//! reference does, with the same error variants (named axes in shape errors).

use retention_core::{Element, HostTensor, Result, RetentionError, RetentionShape, validate_scale};

use crate::reference::RetentionParams;

pub(crate) const QK_AXES: [&str; 4] = ["B", "T", "H", "K"];
pub(crate) const VO_AXES: [&str; 4] = ["B", "T", "H", "V"];
pub(crate) const STATE_AXES: [&str; 4] = ["B", "H", "K", "V"];

/// A validated problem: its shape, log2 γ per head (from f64, narrowed once to f32) and the
/// resolved scale.
#[derive(Debug, Clone)]
pub(crate) struct Dims {
    pub shape: RetentionShape,
    pub log2g: Vec<f32>,
    pub scale: f32,
}

/// `[B=2, T=5, H=4, K=8]`-style description of a shape with named axes.
fn named(axes: &[&str], dims: &[usize]) -> String {
    if axes.len() == dims.len() {
        let parts: Vec<String> = axes
            .iter()
            .zip(dims)
            .map(|(a, d)| format!("{a}={d}"))
            .collect();
        format!("[{}]", parts.join(", "))
    } else {
        format!("{dims:?}")
    }
}

/// Check that shape `got` of tensor `name` equals `want` (axes named in the error).
pub(crate) fn expect_shape(name: &str, axes: &[&str], got: &[usize], want: &[usize]) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(RetentionError::ShapeMismatch {
            tensor: name.into(),
            expected: named(axes, want),
            got: named(axes, got),
        })
    }
}

/// The four dimensions of a rank-4 shape, or a shape error naming the expected axes.
pub(crate) fn rank4(s: &[usize], name: &str, axes: &[&str; 4]) -> Result<[usize; 4]> {
    if s.len() == 4 {
        Ok([s[0], s[1], s[2], s[3]])
    } else {
        Err(RetentionError::ShapeMismatch {
            tensor: name.into(),
            expected: format!("rank 4 [{}]", axes.join(", ")),
            got: format!("rank {} {s:?}", s.len()),
        })
    }
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

/// [`check_qkv`] on bare shapes.
pub(crate) fn check_qkv_shapes(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    params: &RetentionParams,
) -> Result<Dims> {
    let [b, t, h, dk] = rank4(q, "q", &QK_AXES)?;
    let shape = RetentionShape::new(b, t, h, dk, v.get(3).copied().unwrap_or(1))?;
    expect_shape("k", &QK_AXES, k, &shape.qk_shape())?;
    let [_, _, _, dv] = rank4(v, "v", &VO_AXES)?;
    expect_shape("v", &VO_AXES, v, &[b, t, h, dv])?;
    let shape = RetentionShape::new(b, t, h, dk, dv)?;
    params.gammas.check_heads(h)?;
    let scale = validate_scale(params.scale, dk)? as f32;
    let log2g = (0..h).map(|i| params.gammas.log2(i) as f32).collect();
    Ok(Dims {
        shape,
        log2g,
        scale,
    })
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
