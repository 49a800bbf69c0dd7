//! What every call shares: the decays and scale (a [`Retention`] on the call's device), the
//! form of a stateful op, and the varlen boundaries (ARCHITECTURE §1).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

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

/// What makes two calls' [`Retention`]s the same: device, decays (bits), heads, scale.
type Key = (String, Option<Vec<u64>>, usize, usize, Option<u64>);

/// The `Retention`s calls made, so a model's layers reuse theirs (on CUDA, `Retention::new`
/// uploads the decays and synchronises). Cleared when it grows past `CACHE_CAP` entries.
static CACHE: OnceLock<Mutex<HashMap<Key, Arc<Retention>>>> = OnceLock::new();
const CACHE_CAP: usize = 64;

impl Decays {
    /// Retention on `device` for `heads` heads (made once per device, decays and scale).
    pub fn retention(&self, device: &Device, heads: usize) -> PyResult<Arc<Retention>> {
        let bits = |g: &Vec<f64>| g.iter().map(|x| x.to_bits()).collect();
        let key: Key = (
            device.name(),
            self.gammas.as_ref().map(bits),
            self.head_offset,
            heads,
            self.scale.map(f64::to_bits),
        );
        let cache = CACHE.get_or_init(Mutex::default);
        let lock = || {
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(rt) = lock().get(&key) {
            return Ok(Arc::clone(rt));
        }
        let gammas = match &self.gammas {
            Some(g) => Gammas::from_list(g.clone()),
            None => Gammas::retnet_sharded(heads, self.head_offset),
        }
        .py()?;
        let rt = Arc::new(Retention::new(device, RetentionParams::new(gammas, self.scale)).py()?);
        let mut map = lock();
        if map.len() >= CACHE_CAP {
            map.clear();
        }
        map.insert(key, Arc::clone(&rt));
        Ok(rt)
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
