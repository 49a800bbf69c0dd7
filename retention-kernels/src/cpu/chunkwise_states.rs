//! The chunkwise forward that also returns the f32 state entering every chunk — what the
//! backward needs ([`super::chunkwise_backward_with_states`]) or a prefix cache.
//!
//! Per (sequence, head), chunk by chunk: the state R_{i−1} entering chunk i is copied out,
//! then the forward's own chunk step runs ([`chunkwise_heads`]: O = s·((Q Kᵀ ⊙ D) V +
//! (Q R) ⊙ ξ), R ← γ^L R + Kᵀ (V ⊙ ζ)). Threads split the work by (sequence, head); with
//! fewer pairs than threads (and at least 4 chunks), pairs run one at a time with their
//! chunks spread over the threads ([`super::forward_pair`]).
//!
//! Memory: K·V f32 per chunk and head, 4KV/C bytes per token-head (K = V = 128, C = 64:
//! 1 KiB per token-head, against 2(K+V) = 512 bytes of its bf16 q, k, v). What it saves the
//! backward: recomputing them, 2KV FLOPs per token-head (≈ 8% of the backward's
//! 2C(3K+2V) + 8KV at K = V = C = 64) and a second read of k and v.

use std::ops::Range;

use rayon::prelude::*;
use retention_core::{CuSeqlens, HostTensor, Result, RetentionError, RetentionShape};

use super::chunk_kernel::{Emit, Inputs, Tiles, chunkwise_heads};
use super::element::CpuElement;
use super::forward_pair::ForwardPair;
use super::shared_out::SharedOut;
use super::validate::{Dims, check_packed, check_qkv, check_state};
use crate::reference::RetentionParams;

/// The chunkwise forward's outputs with the states every chunk starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkwiseForward<T: CpuElement> {
    /// o `[B, T, H, V]` in the input dtype.
    pub o: HostTensor<T>,
    /// H_T `[B, H, K, V]` (`[N, H, K, V]` varlen), f32.
    pub ht: HostTensor<f32>,
    /// The state entering every chunk, f32 `[ΣNC, H, K, V]`: chunks in token order, row
    /// (sequence) after row, NC = ⌈T/C⌉ per row (⌈T_n/C⌉ per packed sequence). Chunk 0 of a
    /// row holds its H0 (zeros without one).
    pub states: HostTensor<f32>,
}

/// One sequence: tokens `range` of batch row `b`, its states at row `row` of `[rows, H, K, V]`
/// and its chunks from `first_chunk` of the saved-state tensor.
#[derive(Clone)]
pub(crate) struct Seq {
    pub b: usize,
    pub range: Range<usize>,
    pub first_chunk: usize,
}

/// Sequences of a dense batch or a packed one, with their first chunk index; returns the
/// sequences and the total chunk count.
pub(crate) fn sequences(s: &RetentionShape, cu: Option<&CuSeqlens>, c: usize) -> (Vec<Seq>, usize) {
    let ranges: Vec<(usize, Range<usize>)> = match cu {
        Some(cu) => (0..cu.num_seqs()).map(|n| (0, cu.range(n))).collect(),
        None => (0..s.batch).map(|b| (b, 0..s.seq_len)).collect(),
    };
    let mut next = 0;
    let seqs = ranges
        .into_iter()
        .map(|(b, range)| {
            let first_chunk = next;
            next += range.len().div_ceil(c);
            Seq {
                b,
                range,
                first_chunk,
            }
        })
        .collect();
    (seqs, next)
}

/// The forward kernels' view of q, k, v.
pub(crate) fn forward_inputs<'a, T: CpuElement>(
    q: &'a HostTensor<T>,
    k: &'a HostTensor<T>,
    v: &'a HostTensor<T>,
    dims: &Dims,
) -> Inputs<'a, T> {
    let s = dims.shape;
    Inputs {
        q: q.data(),
        k: k.data(),
        v: v.data(),
        seq_len: s.seq_len,
        heads: s.heads,
        dk: s.dk,
        dv: s.dv,
        scale: dims.scale,
    }
}

/// Forward over every (sequence, head), writing o, H_T and every chunk-entering state.
fn forward_with_states<T: CpuElement>(
    x: &Inputs<'_, T>,
    dims: &Dims,
    seqs: &[Seq],
    n_chunks: usize,
    c: usize,
    h0: Option<&HostTensor<f32>>,
) -> ChunkwiseForward<T> {
    let s = dims.shape;
    let (kv, heads) = (s.state_len(), s.heads);
    let mut ht = h0
        .cloned()
        .unwrap_or_else(|| HostTensor::zeros(s.state_shape(seqs.len())));
    let mut o = HostTensor::<T>::zeros(s.vo_shape());
    let mut states = HostTensor::<f32>::zeros(vec![n_chunks, heads, s.dk, s.dv]);
    let out = SharedOut::new(o.data_mut());
    let saved = SharedOut::new(states.data_mut());
    let longest = seqs.iter().map(|q| q.range.len().div_ceil(c)).max();
    if seqs.len() * heads < rayon::current_num_threads() && longest.unwrap_or(0) >= 4 {
        // Fewer pairs than threads: one pair at a time, its chunks in parallel.
        for (job, state) in ht.data_mut().chunks_exact_mut(kv).enumerate() {
            let (seq, h) = (&seqs[job / heads], job % heads);
            let pair = ForwardPair {
                x,
                b: seq.b,
                range: seq.range.clone(),
                h,
                c,
                log2g: dims.log2g[h],
            };
            let slots = ((seq.first_chunk * heads + h) * kv, heads * kv);
            // SAFETY: pairs run one at a time; each writes its own rows and slots.
            unsafe { pair.run(state, h0.is_none(), &out, &saved, slots) };
        }
        return ChunkwiseForward { o, ht, states };
    }
    ht.data_mut().par_chunks_mut(kv).enumerate().for_each_init(
        || Tiles::new(c, s.dk, s.dv),
        |tiles, (job, state)| {
            let (seq, h) = (&seqs[job / heads], job % heads);
            let mut start = seq.range.start;
            let mut chunk = seq.first_chunk;
            while start < seq.range.end {
                let end = (start + c).min(seq.range.end);
                // SAFETY: chunk slot (chunk, h) belongs to this (sequence, head) alone, as do
                // output rows (b, start..end, h).
                unsafe {
                    saved
                        .rows((chunk * heads + h) * kv, kv)
                        .copy_from_slice(state);
                    chunkwise_heads(
                        x,
                        seq.b,
                        start..end,
                        h..h + 1,
                        c,
                        &dims.log2g,
                        state,
                        h0.is_none() && start == seq.range.start,
                        &Emit::Outputs(&out),
                        tiles,
                    );
                }
                start = end;
                chunk += 1;
            }
        },
    );
    ChunkwiseForward { o, ht, states }
}

/// Check the saved states have the `[ΣNC, H, K, V]` shape of this problem and chunk.
pub(crate) fn check_saved(
    states: &HostTensor<f32>,
    s: &RetentionShape,
    n_chunks: usize,
) -> Result<()> {
    states.expect_shape(
        "states",
        &["NC", "H", "K", "V"],
        &[n_chunks, s.heads, s.dk, s.dv],
    )
}

/// Chunkwise forward that also returns the f32 state entering every chunk (see
/// [`ChunkwiseForward`]); o and H_T equal [`super::chunkwise`]'s.
///
/// # Errors
/// As [`super::chunkwise`].
pub fn chunkwise_with_states<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
) -> Result<ChunkwiseForward<T>> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv(q, k, v, params)?;
    check_state(h0, &dims.shape, dims.shape.batch)?;
    let (seqs, n) = sequences(&dims.shape, None, chunk);
    let x = forward_inputs(q, k, v, &dims);
    Ok(forward_with_states(&x, &dims, &seqs, n, chunk, h0))
}

/// [`chunkwise_with_states`] over a packed variable-length batch (as
/// [`super::chunkwise_varlen`]); the states of sequence n follow those of sequence n − 1.
///
/// # Errors
/// As [`super::chunkwise_varlen`].
pub fn chunkwise_varlen_with_states<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
) -> Result<ChunkwiseForward<T>> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv(q, k, v, params)?;
    check_packed(&dims.shape, cu_seqlens)?;
    check_state(h0, &dims.shape, cu_seqlens.num_seqs())?;
    let (seqs, n) = sequences(&dims.shape, Some(cu_seqlens), chunk);
    let x = forward_inputs(q, k, v, &dims);
    Ok(forward_with_states(&x, &dims, &seqs, n, chunk, h0))
}
