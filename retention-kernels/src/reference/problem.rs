//! Validation of user input and index arithmetic shared by every reference form.

use retention_core::{CuSeqlens, Gammas, HostTensor, Result, RetentionShape};

use crate::validate::{check_packed, check_qkv_shapes};

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

pub(crate) use crate::validate::STATE_AXES;

impl<'a> Problem<'a> {
    /// Check q `[B,T,H,K]`, k (same), v `[B,T,H,V]` and the params against each other.
    pub fn new(
        q: &'a HostTensor<f64>,
        k: &'a HostTensor<f64>,
        v: &'a HostTensor<f64>,
        params: &RetentionParams,
    ) -> Result<Self> {
        let (shape, scale) = check_qkv_shapes(q.shape(), k.shape(), v.shape(), params)?;
        let log2g = (0..shape.heads).map(|i| params.gammas.log2(i)).collect();
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
        check_packed(&self.shape, cu_seqlens)
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
