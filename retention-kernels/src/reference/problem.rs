//! Validation of user input and index arithmetic shared by every reference form.

use retention_core::{
    CuSeqlens, Gammas, HostTensor, Result, RetentionError, RetentionShape, validate_scale,
};

/// The per-problem constants of retention: the decay of every head and the scale on q.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionParams {
    /// Per-head decays.
    pub gammas: Gammas,
    /// Scale applied to q exactly once; `None` means K^(-1/2).
    pub scale: Option<f64>,
}

impl RetentionParams {
    /// Decays plus an optional scale (default K^(-1/2)).
    pub fn new(gammas: Gammas, scale: Option<f64>) -> Self {
        Self { gammas, scale }
    }
}

/// A validated problem: borrowed inputs, shape, log2 γ per head, resolved scale.
pub(crate) struct Problem<'a> {
    pub shape: RetentionShape,
    pub q: &'a [f64],
    pub k: &'a [f64],
    pub v: &'a [f64],
    pub log2g: Vec<f64>,
    pub scale: f64,
}

const QK_AXES: [&str; 4] = ["B", "T", "H", "K"];
const VO_AXES: [&str; 4] = ["B", "T", "H", "V"];
pub(crate) const STATE_AXES: [&str; 4] = ["B", "H", "K", "V"];

fn rank4(t: &HostTensor<f64>, name: &str, axes: &[&str; 4]) -> Result<[usize; 4]> {
    let s = t.shape();
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

impl<'a> Problem<'a> {
    /// Check q `[B,T,H,K]`, k (same), v `[B,T,H,V]` and the params against each other.
    pub fn new(
        q: &'a HostTensor<f64>,
        k: &'a HostTensor<f64>,
        v: &'a HostTensor<f64>,
        params: &RetentionParams,
    ) -> Result<Self> {
        let [b, t, h, dk] = rank4(q, "q", &QK_AXES)?;
        let shape = RetentionShape::new(b, t, h, dk, v.shape().get(3).copied().unwrap_or(1))?;
        k.expect_shape("k", &QK_AXES, &shape.qk_shape())?;
        let [vb, vt, vh, dv] = rank4(v, "v", &VO_AXES)?;
        v.expect_shape("v", &VO_AXES, &[b, t, h, dv])?;
        let _ = (vb, vt, vh);
        let shape = RetentionShape::new(b, t, h, dk, dv)?;
        params.gammas.check_heads(h)?;
        let scale = validate_scale(params.scale, dk)?;
        let log2g = (0..h).map(|i| params.gammas.log2(i)).collect();
        Ok(Self {
            shape,
            q: q.data(),
            k: k.data(),
            v: v.data(),
            log2g,
            scale,
        })
    }

    /// Check an optional initial state has shape `[rows, H, K, V]`.
    pub fn check_state(&self, h0: Option<&HostTensor<f64>>, rows: usize) -> Result<()> {
        match h0 {
            Some(s) => s.expect_shape("h0", &STATE_AXES, &self.shape.state_shape(rows)),
            None => Ok(()),
        }
    }

    /// Check a packed variable-length batch: B = 1 and `cu_seqlens` ending at ΣT.
    pub fn check_packed(&self, cu_seqlens: &CuSeqlens) -> Result<()> {
        if self.shape.batch != 1 {
            return Err(RetentionError::ShapeMismatch {
                tensor: "q".into(),
                expected: "packed [B=1, T=ΣT, H, K] with cu_seqlens".into(),
                got: format!("B={}", self.shape.batch),
            });
        }
        if cu_seqlens.as_slice().last() != Some(&self.shape.seq_len) {
            return Err(RetentionError::InvalidCuSeqlens(format!(
                "ends at {:?} but the packed batch has {} tokens",
                cu_seqlens.as_slice().last(),
                self.shape.seq_len
            )));
        }
        Ok(())
    }

    /// q at row `b`, token `t`, head `h` (length K).
    pub fn q_at(&self, b: usize, t: usize, h: usize) -> &'a [f64] {
        let s = &self.shape;
        let o = ((b * s.seq_len + t) * s.heads + h) * s.dk;
        &self.q[o..o + s.dk]
    }

    /// k at row `b`, token `t`, head `h` (length K).
    pub fn k_at(&self, b: usize, t: usize, h: usize) -> &'a [f64] {
        let s = &self.shape;
        let o = ((b * s.seq_len + t) * s.heads + h) * s.dk;
        &self.k[o..o + s.dk]
    }

    /// v at row `b`, token `t`, head `h` (length V).
    pub fn v_at(&self, b: usize, t: usize, h: usize) -> &'a [f64] {
        let s = &self.shape;
        let o = ((b * s.seq_len + t) * s.heads + h) * s.dv;
        &self.v[o..o + s.dv]
    }

    /// Offset of o at row `b`, token `t`, head `h` in a `[B,T,H,V]` buffer.
    pub fn o_offset(&self, b: usize, t: usize, h: usize) -> usize {
        let s = &self.shape;
        ((b * s.seq_len + t) * s.heads + h) * s.dv
    }

    /// Offset of the state of row `r`, head `h` in a `[rows,H,K,V]` buffer.
    pub fn state_offset(&self, r: usize, h: usize) -> usize {
        (r * self.shape.heads + h) * self.shape.state_len()
    }
}

/// Dot product.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `out[j] += w · x[j]`.
pub(crate) fn axpy(out: &mut [f64], w: f64, x: &[f64]) {
    for (o, xi) in out.iter_mut().zip(x) {
        *o += w * xi;
    }
}
