//! Reading `run`'s input: a safetensors file with `q`, `k`, `v` and optionally `h0` and
//! `cu_seqlens`, checked and widened exactly to f64.

use std::path::Path;

use half::{bf16, f16};
use retention_core::{Dtype, HostTensor, RetentionShape};
use safetensors::{Dtype as StDtype, SafeTensors, tensor::TensorView};

use crate::error::CliError;

/// The tensors of one `run` invocation, widened to f64 (exact for every input dtype).
#[derive(Debug)]
pub struct RunInputs {
    /// The one dtype of q, k and v; o is written in it.
    pub dtype: Dtype,
    /// `[B, T, H, K]`.
    pub q: HostTensor<f64>,
    /// `[B, T, H, K]`.
    pub k: HostTensor<f64>,
    /// `[B, T, H, V]`.
    pub v: HostTensor<f64>,
    /// Initial state, `[B or N, H, K, V]` (f32 in the file).
    pub h0: Option<HostTensor<f64>>,
    /// Sequence boundaries of a packed batch, `[N + 1]`, as stored (i64 or i32).
    pub cu_seqlens: Option<Vec<i64>>,
}

impl RunInputs {
    /// The problem's (B, T, H, K, V), already validated by [`load`].
    pub fn shape(&self) -> RetentionShape {
        let q = self.q.shape();
        RetentionShape {
            batch: q[0],
            seq_len: q[1],
            heads: q[2],
            dk: q[3],
            dv: self.v.shape()[3],
        }
    }
}

fn input_dtype(dtype: StDtype) -> Option<Dtype> {
    match dtype {
        StDtype::F32 => Some(Dtype::F32),
        StDtype::F16 => Some(Dtype::F16),
        StDtype::BF16 => Some(Dtype::Bf16),
        _ => None,
    }
}

/// Widen a float tensor's little-endian bytes to f64 (exact: f64 holds every f32/f16/bf16).
fn widen(view: &TensorView<'_>, dtype: Dtype) -> Vec<f64> {
    let bytes = view.data();
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
        Dtype::Bf16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
            .collect(),
    }
}

fn tensor<'a>(file: &SafeTensors<'a>, path: &Path, name: &str) -> Result<TensorView<'a>, CliError> {
    file.tensor(name)
        .map_err(|_| CliError::bad_input(path, format!("missing tensor `{name}`")))
}

fn optional<'a>(file: &SafeTensors<'a>, name: &str) -> Option<TensorView<'a>> {
    file.tensor(name).ok()
}

fn host(
    path: &Path,
    name: &str,
    view: &TensorView<'_>,
    dtype: Dtype,
) -> Result<HostTensor<f64>, CliError> {
    HostTensor::new(view.shape().to_vec(), widen(view, dtype)).map_err(|_| {
        CliError::bad_input(
            path,
            format!("tensor `{name}`: data does not match its shape"),
        )
    })
}

fn check_rank4(path: &Path, name: &str, axes: &str, shape: &[usize]) -> Result<(), CliError> {
    if shape.len() == 4 {
        Ok(())
    } else {
        Err(CliError::bad_input(
            path,
            format!(
                "tensor `{name}` must have rank 4 {axes}, got rank {} {shape:?}",
                shape.len()
            ),
        ))
    }
}

/// Parse and check the file's bytes: q, k, v present, rank 4, one float dtype, and
/// consistent (B, T, H, K, V) with no zero axis; h0 f32; cu_seqlens a rank-1 i64/i32 tensor.
/// The state's shape and the boundaries' values are checked by the computation, which knows N.
///
/// # Errors
/// [`CliError::BadInput`] or [`CliError::Retention`] naming the offending tensor.
pub fn load(bytes: &[u8], path: &Path) -> Result<RunInputs, CliError> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| CliError::bad_input(path, format!("not a valid safetensors file ({e})")))?;
    let (qv, kv, vv) = (
        tensor(&file, path, "q")?,
        tensor(&file, path, "k")?,
        tensor(&file, path, "v")?,
    );
    let dtype = input_dtype(qv.dtype()).ok_or_else(|| {
        CliError::bad_input(
            path,
            format!(
                "tensor `q` has dtype {:?}; q, k and v must be F32, F16 or BF16",
                qv.dtype()
            ),
        )
    })?;
    for (name, view) in [("k", &kv), ("v", &vv)] {
        if view.dtype() != qv.dtype() {
            return Err(CliError::bad_input(
                path,
                format!(
                    "tensor `{name}` has dtype {:?} but `q` has {:?}; q, k and v must share one dtype",
                    view.dtype(),
                    qv.dtype()
                ),
            ));
        }
    }
    check_rank4(path, "q", "[B, T, H, K]", qv.shape())?;
    check_rank4(path, "k", "[B, T, H, K]", kv.shape())?;
    check_rank4(path, "v", "[B, T, H, V]", vv.shape())?;
    let q = host(path, "q", &qv, dtype)?;
    let k = host(path, "k", &kv, dtype)?;
    let v = host(path, "v", &vv, dtype)?;
    let [b, t, h, dk] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    k.expect_shape("k", &["B", "T", "H", "K"], q.shape())?;
    let dv = v.shape()[3];
    v.expect_shape("v", &["B", "T", "H", "V"], &[b, t, h, dv])?;
    RetentionShape::new(b, t, h, dk, dv)?;

    let h0 = match optional(&file, "h0") {
        None => None,
        Some(view) if view.dtype() == StDtype::F32 => Some(host(path, "h0", &view, Dtype::F32)?),
        Some(view) => {
            return Err(CliError::bad_input(
                path,
                format!("tensor `h0` has dtype {:?}; states are F32", view.dtype()),
            ));
        }
    };
    let cu_seqlens = optional(&file, "cu_seqlens")
        .map(|view| read_cu_seqlens(&view, path))
        .transpose()?;
    Ok(RunInputs {
        dtype,
        q,
        k,
        v,
        h0,
        cu_seqlens,
    })
}

fn read_cu_seqlens(view: &TensorView<'_>, path: &Path) -> Result<Vec<i64>, CliError> {
    if view.shape().len() != 1 {
        return Err(CliError::bad_input(
            path,
            format!(
                "tensor `cu_seqlens` must have rank 1 [N+1], got shape {:?}",
                view.shape()
            ),
        ));
    }
    let bytes = view.data();
    match view.dtype() {
        StDtype::I64 => Ok(bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        StDtype::I32 => Ok(bytes
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        other => Err(CliError::bad_input(
            path,
            format!("tensor `cu_seqlens` has dtype {other:?}; expected I64 or I32"),
        )),
    }
}

/// An optional float tensor `name` of the input file, which must have dtype `dtype` when
/// present (the input dtype for `do`, `dy`, `g`; f32 for `dht`), widened exactly to f64.
/// Its shape is checked by the computation that uses it.
///
/// # Errors
/// [`CliError::BadInput`] for an unreadable file, a wrong dtype or data not matching the shape.
pub fn load_optional(
    bytes: &[u8],
    path: &Path,
    name: &str,
    dtype: Dtype,
) -> Result<Option<HostTensor<f64>>, CliError> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| CliError::bad_input(path, format!("not a valid safetensors file ({e})")))?;
    let Some(view) = optional(&file, name) else {
        return Ok(None);
    };
    if input_dtype(view.dtype()) != Some(dtype) {
        return Err(CliError::bad_input(
            path,
            format!(
                "tensor `{name}` has dtype {:?}; expected {}",
                view.dtype(),
                dtype.name()
            ),
        ));
    }
    host(path, name, &view, dtype).map(Some)
}
