//! Variable-length batches: packed q, k `[1, ΣT, H, K]`, v `[1, ΣT, H, V]` and `cu_seqlens`
//! `[N+1]`; states `[N, H, K, V]`, one per sequence.

use retention_core::{CuSeqlens, HostTensor, Result, RetentionError};

use super::chunkwise::chunkwise_seq;
use super::problem::{Problem, RetentionParams};
use super::recurrent::recurrent_seq;

fn run_varlen(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    h0: Option<&HostTensor<f64>>,
    chunk: Option<usize>,
) -> Result<(HostTensor<f64>, HostTensor<f64>)> {
    let p = Problem::new(q, k, v, params)?;
    let s = p.shape;
    p.check_packed(cu_seqlens)?;
    let n = cu_seqlens.num_seqs();
    p.check_state(h0, n)?;
    let mut o = HostTensor::zeros(s.vo_shape());
    let mut ht = h0
        .cloned()
        .unwrap_or_else(|| HostTensor::zeros(s.state_shape(n)));
    for seq in 0..n {
        for h in 0..s.heads {
            let so = p.state_offset(seq, h);
            let state = &mut ht.data_mut()[so..so + s.state_len()];
            let range = cu_seqlens.range(seq);
            match chunk {
                Some(c) => chunkwise_seq(&p, 0, range, h, c, state, o.data_mut()),
                None => recurrent_seq(&p, 0, range, h, state, o.data_mut()),
            }
        }
    }
    Ok((o, ht))
}

/// Recurrent retention over a packed variable-length batch. Returns (o, H_T `[N,H,K,V]`).
///
/// # Errors
/// Shape mismatches (B must be 1), malformed `cu_seqlens`, gammas, scale.
pub fn recurrent_varlen(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    h0: Option<&HostTensor<f64>>,
) -> Result<(HostTensor<f64>, HostTensor<f64>)> {
    run_varlen(q, k, v, cu_seqlens, params, h0, None)
}

/// Chunkwise retention over a packed variable-length batch; chunks restart at every sequence
/// boundary. Returns (o, H_T `[N,H,K,V]`).
///
/// # Errors
/// As [`recurrent_varlen`], plus [`RetentionError::ZeroChunk`].
pub fn chunkwise_varlen(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f64>>,
) -> Result<(HostTensor<f64>, HostTensor<f64>)> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    run_varlen(q, k, v, cu_seqlens, params, h0, Some(chunk))
}
