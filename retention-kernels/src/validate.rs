//! Input checks shared by every backend of this crate (the f64 reference and the CPU
//! kernels), so all of them accept and reject exactly the same inputs with the same errors.

use retention_core::{
    CuSeqlens, Result, RetentionError, RetentionShape, check_shape, validate_scale,
};

use crate::reference::RetentionParams;

/// Axes of q and k.
pub(crate) const QK_AXES: [&str; 4] = ["B", "T", "H", "K"];
/// Axes of v and o.
pub(crate) const VO_AXES: [&str; 4] = ["B", "T", "H", "V"];
/// Axes of a state tensor.
pub(crate) const STATE_AXES: [&str; 4] = ["B", "H", "K", "V"];

/// The four dimensions of a rank-4 shape, or a shape error naming the expected axes.
pub(crate) fn rank4(s: &[usize], name: &str, axes: &[&str; 4]) -> Result<[usize; 4]> {
    if let [a, b, c, d] = *s {
        Ok([a, b, c, d])
    } else {
        Err(RetentionError::ShapeMismatch {
            tensor: name.into(),
            expected: format!("rank 4 [{}]", axes.join(", ")),
            got: format!("rank {} {s:?}", s.len()),
        })
    }
}

/// A decode input `[N, H, D]` seen as the one-token sequence `[N, 1, H, D]`.
pub(crate) fn decode_rows(s: &[usize]) -> Result<[usize; 4]> {
    if let [n, h, d] = *s {
        Ok([n, 1, h, d])
    } else {
        Err(RetentionError::ShapeMismatch {
            tensor: "decode input".into(),
            expected: "rank 3 [N, H, K|V]".into(),
            got: format!("rank {} {s:?}", s.len()),
        })
    }
}

/// Check q `[B,T,H,K]`, k (same) and v `[B,T,H,V]` against each other and the params.
/// Returns the shape and the resolved scale.
pub(crate) fn check_qkv_shapes(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    params: &RetentionParams,
) -> Result<(RetentionShape, f64)> {
    let shape = check_qkv_layout(q, k, v)?;
    params.gammas.check_heads(shape.heads)?;
    let scale = validate_scale(params.scale, shape.dk)?;
    Ok((shape, scale))
}

/// Check q `[B,T,H,K]`, k (same) and v `[B,T,H,V]` against each other: the checks every
/// op on token-major q, k, v shares (retention, and the causal attention prefill, which has
/// no decays).
pub(crate) fn check_qkv_layout(q: &[usize], k: &[usize], v: &[usize]) -> Result<RetentionShape> {
    let [b, t, h, dk] = rank4(q, "q", &QK_AXES)?;
    let shape = RetentionShape::new(b, t, h, dk, v.get(3).copied().unwrap_or(1))?;
    check_shape("k", &QK_AXES, k, &shape.qk_shape())?;
    let [_, _, _, dv] = rank4(v, "v", &VO_AXES)?;
    check_shape("v", &VO_AXES, v, &[b, t, h, dv])?;
    RetentionShape::new(b, t, h, dk, dv)
}

/// Check a decode step's slots against the pool: one per row, inside the pool, never twice
/// (two rows would update one state).
pub(crate) fn check_slots(slots: &[usize], rows: usize, capacity: usize) -> Result<()> {
    if slots.len() != rows {
        return Err(RetentionError::ShapeMismatch {
            tensor: "slots".into(),
            expected: format!("[N={rows}]"),
            got: format!("[N={}]", slots.len()),
        });
    }
    let mut seen = vec![false; capacity];
    for &slot in slots {
        if slot >= capacity {
            return Err(RetentionError::Slot(format!(
                "slot {slot} outside a pool of {capacity}"
            )));
        }
        if std::mem::replace(&mut seen[slot], true) {
            return Err(RetentionError::Slot(format!(
                "slot {slot} appears twice in one step"
            )));
        }
    }
    Ok(())
}

/// Check a packed variable-length batch: B = 1 and `cu_seqlens` ending at ΣT.
pub(crate) fn check_packed(shape: &RetentionShape, cu_seqlens: &CuSeqlens) -> Result<()> {
    if shape.batch != 1 {
        return Err(RetentionError::ShapeMismatch {
            tensor: "q".into(),
            expected: "packed [B=1, T=ΣT, H, K] with cu_seqlens".into(),
            got: format!("B={}", shape.batch),
        });
    }
    if cu_seqlens.as_slice().last() != Some(&shape.seq_len) {
        return Err(RetentionError::InvalidCuSeqlens(format!(
            "ends at {:?} but the packed batch has {} tokens",
            cu_seqlens.as_slice().last(),
            shape.seq_len
        )));
    }
    Ok(())
}
