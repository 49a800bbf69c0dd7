//! What every call shares: the decays and scale (a [`Retention`] on the call's device), the
//! form of a stateful op, and the varlen boundaries (ARCHITECTURE §1).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use retention_core::{CuSeqlens, Gammas};
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, Retention};

use crate::error::{IntoPy, PyResult};
use crate::raw::Raw;

/// Decays and scale as Python gives them (`retention._native_call.Decays`).
#[derive(Debug, Clone, FromPyObject)]
pub struct Decays {
    /// Explicit per-head γ, or `None` for the RetNet decays.
    pub gammas: Option<Vec<f64>>,
    /// Global index of the first head (the RetNet decays of a head shard).
    pub head_offset: usize,
    /// Scale applied to q; `None` is K^(-1/2).
    pub scale: Option<f64>,
}

/// The axis `axis` of `t`, or a `ValueError` naming what rank was expected.
pub fn dim(t: &Raw, name: &str, axis: usize, layout: &str) -> PyResult<usize> {
    t.shape.get(axis).copied().ok_or_else(|| {
        PyValueError::new_err(format!(
            "`{name}` must be {layout}, got shape {:?}",
            t.shape
        ))
    })
}

impl Decays {
    /// Retention on `device` for `heads` heads.
    pub fn retention(&self, device: &Device, heads: usize) -> PyResult<Retention> {
        let gammas = match &self.gammas {
            Some(g) => Gammas::from_list(g.clone()),
            None => Gammas::retnet_sharded(heads, self.head_offset),
        }
        .py()?;
        Retention::new(device, RetentionParams::new(gammas, self.scale)).py()
    }
}

/// Which stateful form runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Chunkwise with this chunk.
    Chunk(usize),
    /// Token by token.
    Recurrent,
}

impl Form {
    /// `chunk_size` for the chunkwise form, `None` for the recurrent one.
    pub fn of(chunk: Option<usize>) -> Self {
        chunk.map_or(Form::Recurrent, Form::Chunk)
    }
}

/// Validated `cu_seqlens` of a packed batch whose q is `[1, ΣT, H, K]`.
pub fn cu_seqlens(bounds: Option<&[i64]>, q: &Raw) -> PyResult<Option<CuSeqlens>> {
    let Some(b) = bounds else { return Ok(None) };
    let total = dim(q, "q", 1, "[1, ΣT, H, K] with cu_seqlens")?;
    CuSeqlens::from_i64(b, total).py().map(Some)
}
