//! Chunkwise backward (dQ, dK, dV, dH0 and d log γ from dO and an optional dH_T), dense and
//! packed varlen, and the chunkwise forward that also returns the f32 state entering every
//! chunk — what the backward needs.
//!
//! The math is in [`super::backward_kernel`] (and ARCHITECTURE §7). Per (row, head):
//! 1. the states R_{i−1} entering every chunk: taken from the forward's saved states, or
//!    recomputed by the forward's state recurrence (one product Kᵀ(V ⊙ ζ) per chunk, reading
//!    only k and v: 2KV FLOPs per token);
//! 2. one reverse sweep over the chunks carrying dR in f32, writing dQ, dK, dV per chunk and
//!    returning dH0 = dR_{−1} and the (row, head)'s share of d log γ.
//!
//! Work is split across threads by (row, head) pair. With fewer pairs than threads (and at
//! least 4 chunks), pairs run one at a time with their chunks spread over the threads: the
//! chunks' own state and adjoint terms in parallel, two serial scans of K·V additions per
//! chunk, then every chunk's gradients in parallel (`Pair::backward_chunk_parallel`).
//!
//! Memory: the entering states are K·V f32 per chunk, 4KV/C bytes per token per head
//! (K = V = 128, C = 64: 1 KiB per token-head, against 2(K+V) = 512 bytes of bf16 q, k, v
//! inputs). Saving them in the forward ([`chunkwise_with_states`]) spares the backward the
//! recompute (2KV FLOPs per token-head, ≈ 8% of the backward's 2C(3K+2V) + 8KV at
//! K = V = C = 64); without saving, the backward allocates them per pair for the pair's
//! duration only (one sequence's worth per thread).

use std::ops::Range;

use rayon::prelude::*;
use retention_core::{CuSeqlens, HostTensor, Result, RetentionError, RetentionShape};

use super::backward_kernel::{
    BackwardInputs, BackwardOutputs, BackwardTiles, adjoint_contribution, backward_chunk,
    backward_range,
};
use super::chunk_kernel::{Emit, Inputs, Tiles, chunkwise_heads};
use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::shared_out::SharedOut;
use super::simd;
use super::validate::{
    Dims, STATE_AXES, VO_AXES, check_packed, check_qkv, check_state, decay_table,
};
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
struct Seq {
    b: usize,
    range: Range<usize>,
    first_chunk: usize,
}

/// Sequences of a dense batch or a packed one, with their first chunk index; returns the
/// sequences and the total chunk count.
fn sequences(s: &RetentionShape, cu: Option<&CuSeqlens>, c: usize) -> (Vec<Seq>, usize) {
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

fn forward_inputs<'a, T: CpuElement>(
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
        x.load_kv(b, start..start + len, h, tiles);
        decay_table(log2g, len, &mut tiles.pow);
        for (j, vrow) in tiles.v.chunks_exact_mut(dv).take(len).enumerate() {
            simd::scale(vrow, tiles.pow[len - 1 - j]);
        }
        let (done, rest) = all.split_at_mut(i * kv);
        let next = &mut rest[..kv];
        next.copy_from_slice(&done[(i - 1) * kv..]);
        matmul(
            dk,
            dv,
            len,
            next,
            dv,
            Some(tiles.pow[len]),
            View::transposed(&tiles.k, dk),
            View::rows(&tiles.v, dv),
        );
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
                        all.resize(n * kv, 0.0);
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

/// Where one pair's chunk-entering states come from in the chunk-parallel backward.
#[derive(Clone, Copy)]
enum PairStates<'s> {
    /// Recompute from this H0 (`None`: zero).
    Recompute(Option<&'s [f32]>),
    /// Saved: chunk i's K×V state starts at `i · stride` of the slice.
    Saved(&'s [f32], usize),
}

/// One (sequence, head) pair, for the chunk-parallel backward.
struct Pair<'p, 'a, T> {
    fwd: &'p Inputs<'a, T>,
    x: &'p BackwardInputs<'a, T>,
    out: &'p BackwardOutputs<'p, 'a, T>,
    b: usize,
    range: Range<usize>,
    h: usize,
    c: usize,
    log2g: f32,
}

impl<T: CpuElement> Pair<'_, '_, T> {
    /// Tokens of chunk `i`.
    fn chunk(&self, i: usize) -> Range<usize> {
        let start = self.range.start + i * self.c;
        start..(start + self.c).min(self.range.end)
    }

    /// The pair's backward with its chunks spread over the threads: (1) every chunk's own
    /// state contribution Kᵀ(V ⊙ ζ) in parallel, then a serial scan R_i = γ^L R_{i−1} + own
    /// (or the forward's saved states); (2) every
    /// chunk's own adjoint term Qᵀ(s ξ ⊙ dO) in parallel, then the reverse scan
    /// dR_{i−1} = γ^L dR_i + own; (3) dQ, dK, dV of every chunk in parallel. The scans are
    /// K·V additions per chunk. `adj` holds dH_T on entry and dH0 on return.
    fn backward_chunk_parallel(&self, from: PairStates<'_>, adj: &mut [f32]) -> f64 {
        let (dk, dv, c) = (self.x.dk, self.x.dv, self.c);
        let kv = dk * dv;
        let n = self.range.len().div_ceil(c);
        if n == 0 {
            return 0.0; // an empty sequence: dH0 = dH_T, nothing else
        }
        let gamma_len = |i: usize| (self.chunk(i).len() as f32 * self.log2g).exp2();
        // (1) States entering every chunk.
        let h0 = match from {
            PairStates::Recompute(h0) => Some(h0),
            PairStates::Saved(..) => None,
        };
        let states: Option<Vec<f32>> = h0.map(|h0| {
            let mut all = vec![0.0f32; n * kv];
            if let Some(h0) = h0 {
                all[..kv].copy_from_slice(h0);
            }
            all[kv..].par_chunks_mut(kv).enumerate().for_each_init(
                || Tiles::new(c, dk, dv),
                |tiles, (i, own)| {
                    let chunk = self.chunk(i);
                    let len = chunk.len();
                    self.fwd.load_kv(self.b, chunk, self.h, tiles);
                    decay_table(self.log2g, len, &mut tiles.pow);
                    for (j, vrow) in tiles.v.chunks_exact_mut(dv).take(len).enumerate() {
                        simd::scale(vrow, tiles.pow[len - 1 - j]);
                    }
                    let (kt, vt) = (View::transposed(&tiles.k, dk), View::rows(&tiles.v, dv));
                    matmul(dk, dv, len, own, dv, None, kt, vt);
                },
            );
            for i in 1..n {
                let (done, rest) = all.split_at_mut(i * kv);
                simd::axpy(&mut rest[..kv], gamma_len(i - 1), &done[(i - 1) * kv..]);
            }
            all
        });
        let r_prev = |i: usize| -> Option<&[f32]> {
            match (&states, from) {
                (Some(_), PairStates::Recompute(None)) if i == 0 => None,
                (Some(all), _) => Some(&all[i * kv..(i + 1) * kv]),
                (None, PairStates::Saved(saved, stride)) => Some(&saved[i * stride..][..kv]),
                (None, PairStates::Recompute(_)) => None,
            }
        };
        // (2) dR_i leaving every chunk: slot i−1 takes chunk i's own term, then the scan.
        let mut leaving = vec![0.0f32; n * kv];
        leaving[(n - 1) * kv..].copy_from_slice(adj);
        leaving[..(n - 1) * kv]
            .par_chunks_mut(kv)
            .enumerate()
            .for_each_init(
                || BackwardTiles::new(c, dk, dv),
                |tiles, (slot, own)| {
                    let chunk = self.chunk(slot + 1);
                    adjoint_contribution(self.x, self.b, chunk, self.h, self.log2g, own, tiles);
                },
            );
        for i in (1..n).rev() {
            let (before, from) = leaving.split_at_mut(i * kv);
            simd::axpy(&mut before[(i - 1) * kv..], gamma_len(i), &from[..kv]);
        }
        // dH0 = γ^L dR_0 + chunk 0's own term.
        let mut tiles = BackwardTiles::new(c, dk, dv);
        adjoint_contribution(
            self.x,
            self.b,
            self.chunk(0),
            self.h,
            self.log2g,
            adj,
            &mut tiles,
        );
        simd::axpy(adj, gamma_len(0), &leaving[..kv]);
        // (3) Every chunk's gradients.
        let parts: Vec<f32> = leaving
            .par_chunks_mut(kv)
            .enumerate()
            .map_init(
                || BackwardTiles::new(c, dk, dv),
                |tiles, (i, d_r)| {
                    // SAFETY: chunk i's rows of this pair are written by this task alone.
                    unsafe {
                        backward_chunk(
                            self.x,
                            self.out,
                            self.b,
                            self.chunk(i),
                            self.h,
                            self.log2g,
                            r_prev(i),
                            d_r,
                            false,
                            tiles,
                        )
                    }
                },
            )
            .collect();
        parts.iter().map(|&p| f64::from(p)).sum()
    }
}

/// Check the saved states have the `[ΣNC, H, K, V]` shape of this problem and chunk.
fn check_saved(states: &HostTensor<f32>, s: &RetentionShape, n_chunks: usize) -> Result<()> {
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

/// [`chunkwise_backward`] from the states a [`chunkwise_with_states`] call with the same
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
