//! Chunkwise backward: dQ, dK, dV, dH0 and d log γ from dO and an optional dH_T, dense and
//! packed varlen, any chunk ≥ 1 (C need not divide T).
//!
//! The math is in [`super::backward_kernel`] (and ARCHITECTURE §7). Per (row, head):
//! 1. the states R_{i−1} entering every chunk: taken from the forward's saved states
//!    ([`super::chunkwise_with_states`]), or recomputed by the forward's state recurrence
//!    (one product Kᵀ(V ⊙ ζ) per chunk, reading only k and v: 2KV FLOPs per token);
//! 2. one reverse sweep over the chunks carrying dR in f32, writing dQ, dK, dV per chunk and
//!    returning dH0 = dR_{−1} and the (row, head)'s share of d log γ.
//!
//! Work is split across threads by (row, head) pair. With fewer pairs than threads (and at
//! least 4 chunks), pairs run one at a time with their chunks spread over the threads
//! ([`super::backward_pair`]).
//!
//! Memory: recomputed states take K·V f32 per chunk of the pair in flight, in a buffer each
//! task keeps (4KV/C bytes per token of one sequence per thread); saved states cost the same
//! per token of every sequence and head for the whole step (see [`super::chunkwise_states`]).

use std::ops::Range;

use rayon::prelude::*;
use retention_core::{CuSeqlens, HostTensor, Result, RetentionError};

use super::backward_kernel::{BackwardInputs, BackwardOutputs, BackwardTiles, backward_range};
use super::backward_pair::{Pair, PairStates};
use super::chunk_kernel::{Inputs, Tiles, own_state};
use super::chunkwise_states::{Seq, check_saved, forward_inputs, sequences};
use super::element::CpuElement;
use super::shared_out::SharedOut;
use super::validate::{Dims, STATE_AXES, VO_AXES, check_packed, check_qkv, check_state};
use crate::reference::RetentionParams;

/// Gradients from the CPU backward: dq, dk, dv in the input dtype; dh0 and d log γ in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuGradients<T: CpuElement> {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<T>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<T>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<T>,
    /// dL/dH0 `[B, H, K, V]` (`[N, H, K, V]` varlen); dH0 at H0 = 0 when no h0 was given.
    pub dh0: HostTensor<f32>,
    /// dL/dlog γ_h `[H]`, summed over rows (sequences) and tokens.
    pub dlog_gamma: HostTensor<f32>,
}

/// The states entering chunks 1.. of tokens `range` (row `b`, head `h`) into `all`
/// (`n` K×V blocks), from the one entering chunk 0 already in `all[0]`: per chunk of length L,
/// R ← γ^L R + Kᵀ (V ⊙ ζ), ζ_j = γ^{L−1−j} — the forward's state step, reading only k and v.
#[allow(clippy::too_many_arguments)]
fn recompute_states<T: CpuElement>(
    x: &Inputs<'_, T>,
    b: usize,
    range: Range<usize>,
    h: usize,
    c: usize,
    log2g: f32,
    all: &mut [f32],
    tiles: &mut Tiles,
) {
    let (dk, dv) = (x.dk, x.dv);
    let kv = dk * dv;
    for i in 1..all.len() / kv {
        let start = range.start + (i - 1) * c;
        let len = c.min(range.end - start);
        let (done, rest) = all.split_at_mut(i * kv);
        let next = &mut rest[..kv];
        next.copy_from_slice(&done[(i - 1) * kv..]);
        let beta = (len as f32 * log2g).exp2();
        own_state(x, b, start..start + len, h, log2g, next, Some(beta), tiles);
    }
}

/// Where the backward gets the chunk-entering states from.
#[derive(Clone, Copy)]
enum Entering<'a> {
    /// Recompute them from H0 (`None`: zeros).
    Recompute(Option<&'a [f32]>),
    /// The forward's saved `[ΣNC, H, K, V]` states.
    Saved(&'a [f32]),
}

/// The backward over every (sequence, head) pair.
#[allow(clippy::too_many_arguments)]
fn backward<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    dims: &Dims,
    seqs: &[Seq],
    c: usize,
    entering: Entering<'_>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    let s = dims.shape;
    let (kv, heads) = (s.state_len(), s.heads);
    d_o.expect_shape("d_o", &VO_AXES, &s.vo_shape())?;
    if let Some(d) = d_ht {
        d.expect_shape("d_ht", &STATE_AXES, &s.state_shape(seqs.len()))?;
    }
    let mut dq = HostTensor::<T>::zeros(s.qk_shape());
    let mut dk = HostTensor::<T>::zeros(s.qk_shape());
    let mut dv = HostTensor::<T>::zeros(s.vo_shape());
    let mut dh0 = d_ht
        .cloned()
        .unwrap_or_else(|| HostTensor::zeros(s.state_shape(seqs.len())));
    let fwd = forward_inputs(q, k, v, dims);
    let x = BackwardInputs {
        q: q.data(),
        k: k.data(),
        v: v.data(),
        d_o: d_o.data(),
        seq_len: s.seq_len,
        heads,
        dk: s.dk,
        dv: s.dv,
        scale: dims.scale,
    };
    let (oq, ok, ov) = (
        SharedOut::new(dq.data_mut()),
        SharedOut::new(dk.data_mut()),
        SharedOut::new(dv.data_mut()),
    );
    let out = BackwardOutputs {
        dq: &oq,
        dk: &ok,
        dv: &ov,
    };
    let longest = seqs
        .iter()
        .map(|q| q.range.len().div_ceil(c))
        .max()
        .unwrap_or(0);
    if seqs.len() * heads < rayon::current_num_threads() && longest >= 4 {
        // Fewer pairs than threads: one pair at a time, its chunks in parallel.
        let mut per_pair = Vec::with_capacity(seqs.len() * heads);
        for (job, adj) in dh0.data_mut().chunks_exact_mut(kv).enumerate() {
            let (seq, h) = (&seqs[job / heads], job % heads);
            let from = match entering {
                Entering::Recompute(h0) => {
                    PairStates::Recompute(h0.map(|h0| &h0[job * kv..(job + 1) * kv]))
                }
                Entering::Saved(saved) => {
                    let first = (seq.first_chunk * heads + h) * kv;
                    PairStates::Saved(&saved[first..], heads * kv)
                }
            };
            let pair = Pair {
                fwd: &fwd,
                x: &x,
                out: &out,
                b: seq.b,
                range: seq.range.clone(),
                h,
                c,
                log2g: dims.log2g[h],
            };
            per_pair.push(pair.backward_chunk_parallel(from, adj));
        }
        return gradients(dq, dk, dv, dh0, &per_pair, heads);
    }
    let per_pair: Vec<f64> = dh0
        .data_mut()
        .par_chunks_mut(kv)
        .enumerate()
        .map_init(
            // The recomputed states live in a buffer each task keeps: allocating them per
            // pair costs a page fault per 4 KiB touched.
            || {
                (
                    BackwardTiles::new(c, s.dk, s.dv),
                    Tiles::new(c, s.dk, s.dv),
                    Vec::<f32>::new(),
                )
            },
            |(tiles, fwd_tiles, all), (job, adj)| {
                let (seq, h) = (&seqs[job / heads], job % heads);
                let n = seq.range.len().div_ceil(c);
                let recomputed = match entering {
                    Entering::Recompute(h0) => {
                        // At least one state: an empty sequence still reads its H0 (dH0 = dH_T).
                        all.resize(n.max(1) * kv, 0.0);
                        match h0 {
                            Some(h0) => all[..kv].copy_from_slice(&h0[job * kv..(job + 1) * kv]),
                            None => all[..kv].fill(0.0),
                        }
                        let range = seq.range.clone();
                        recompute_states(&fwd, seq.b, range, h, c, dims.log2g[h], all, fwd_tiles);
                        Some(h0.is_none())
                    }
                    Entering::Saved(_) => None,
                };
                let state_at: Vec<Option<&[f32]>> = (0..n)
                    .map(|i| match (&recomputed, &entering) {
                        (Some(true), _) if i == 0 => None,
                        (Some(_), _) => Some(&all[i * kv..(i + 1) * kv]),
                        (None, Entering::Saved(saved)) => {
                            let at = ((seq.first_chunk + i) * heads + h) * kv;
                            Some(&saved[at..at + kv])
                        }
                        (None, Entering::Recompute(_)) => None,
                    })
                    .collect();
                // SAFETY: this (sequence, head) pair alone writes rows (b, range, h).
                unsafe {
                    backward_range(
                        &x,
                        &out,
                        seq.b,
                        seq.range.clone(),
                        h,
                        c,
                        dims.log2g[h],
                        &state_at,
                        adj,
                        tiles,
                    )
                }
            },
        )
        .collect();
    gradients(dq, dk, dv, dh0, &per_pair, heads)
}

/// The gradients from their tensors and every (sequence, head) pair's d log γ share.
fn gradients<T: CpuElement>(
    dq: HostTensor<T>,
    dk: HostTensor<T>,
    dv: HostTensor<T>,
    dh0: HostTensor<f32>,
    per_pair: &[f64],
    heads: usize,
) -> Result<CpuGradients<T>> {
    let mut dlog_gamma = vec![0.0f64; heads];
    for (job, part) in per_pair.iter().enumerate() {
        dlog_gamma[job % heads] += part;
    }
    Ok(CpuGradients {
        dq,
        dk,
        dv,
        dh0,
        dlog_gamma: HostTensor::new(vec![heads], dlog_gamma.iter().map(|&x| x as f32).collect())?,
    })
}

/// Gradients of [`super::chunkwise`] (any chunk ≥ 1) for the upstream gradient `d_o`
/// `[B, T, H, V]` and optional `d_ht` `[B, H, K, V]` f32, recomputing the chunk states from
/// `h0`. Equal to `reference::chunkwise_backward` within f32 rounding.
///
/// # Errors
/// As [`super::chunkwise`], plus shape mismatches of `d_o` and `d_ht`.
#[allow(clippy::too_many_arguments)]
pub fn chunkwise_backward<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv(q, k, v, params)?;
    check_state(h0, &dims.shape, dims.shape.batch)?;
    let (seqs, _) = sequences(&dims.shape, None, chunk);
    let entering = Entering::Recompute(h0.map(HostTensor::data));
    backward(q, k, v, &dims, &seqs, chunk, entering, d_o, d_ht)
}

/// [`chunkwise_backward`] from the states a [`super::chunkwise_with_states`] call with the same
/// inputs and chunk saved (no recompute; H0 is the saved chunk-0 state).
///
/// # Errors
/// As [`chunkwise_backward`], plus a shape mismatch of `states` (`[ΣNC, H, K, V]`).
#[allow(clippy::too_many_arguments)]
pub fn chunkwise_backward_with_states<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    chunk: usize,
    states: &HostTensor<f32>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv(q, k, v, params)?;
    let (seqs, n) = sequences(&dims.shape, None, chunk);
    check_saved(states, &dims.shape, n)?;
    let entering = Entering::Saved(states.data());
    backward(q, k, v, &dims, &seqs, chunk, entering, d_o, d_ht)
}

/// Gradients of [`super::chunkwise_varlen`]: packed inputs, `h0` / `d_ht` / dH0
/// `[N, H, K, V]`; chunks restart at every sequence boundary.
///
/// # Errors
/// As [`super::chunkwise_varlen`], plus shape mismatches of `d_o` and `d_ht`.
#[allow(clippy::too_many_arguments)]
pub fn chunkwise_backward_varlen<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv(q, k, v, params)?;
    check_packed(&dims.shape, cu_seqlens)?;
    check_state(h0, &dims.shape, cu_seqlens.num_seqs())?;
    let (seqs, _) = sequences(&dims.shape, Some(cu_seqlens), chunk);
    let entering = Entering::Recompute(h0.map(HostTensor::data));
    backward(q, k, v, &dims, &seqs, chunk, entering, d_o, d_ht)
}

/// Gradients of the recurrent form. The recurrent and chunkwise forms compute the same
/// function, so this is [`chunkwise_backward`] at chunk 64 (a token-by-token sweep, chunk 1,
/// gives the same gradients but runs every product at size 1).
///
/// # Errors
/// As [`chunkwise_backward`].
pub fn recurrent_backward<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    h0: Option<&HostTensor<f32>>,
    d_o: &HostTensor<T>,
    d_ht: Option<&HostTensor<f32>>,
) -> Result<CpuGradients<T>> {
    chunkwise_backward(q, k, v, params, RECURRENT_CHUNK, h0, d_o, d_ht)
}

/// Chunk [`recurrent_backward`] runs at.
const RECURRENT_CHUNK: usize = 64;
