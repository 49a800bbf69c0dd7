//! Chunkwise forward (H0 → outputs and H_T), dense `[B, T, H, ·]` and packed varlen.
//!
//! Work is split across threads by (row, group of heads). When there are fewer (row, head)
//! pairs than threads, each sequence is also cut into segments (whole chunks) that run in parallel:
//! pass 1 computes every segment's own state contribution from zero, a short serial scan
//! turns those into each segment's incoming state, pass 2 computes the outputs.

use std::ops::Range;

use rayon::prelude::*;
use retention_core::{CuSeqlens, HostTensor, Result, RetentionError, TensorView, TensorViewMut};

use super::chunk_kernel::{Emit, Inputs, Tiles, chunkwise_heads};
use super::element::CpuElement;
use super::shared_out::SharedOut;
use super::validate::{
    STATE_AXES, VO_AXES, check_packed, check_qkv_views, check_state_view, expect_shape,
};
use crate::reference::RetentionParams;

/// A token range of one row for a group of consecutive heads, with their states.
struct Job<'s> {
    b: usize,
    range: Range<usize>,
    heads: Range<usize>,
    states: &'s mut [f32],
}

/// Heads per job: enough jobs for two per thread, otherwise as many heads per job as
/// possible, since heads of one job walk the token-major input pages together.
fn heads_per_job(rows: usize, heads: usize) -> usize {
    let groups = (2 * rayon::current_num_threads())
        .div_ceil(rows)
        .clamp(1, heads);
    heads.div_ceil(groups)
}

/// Cut `states` (`[rows, H, K, V]`) into jobs; `row_of(r)` gives row r's (b, token range).
fn make_jobs(
    states: &mut [f32],
    rows: usize,
    heads: usize,
    kv: usize,
    row_of: impl Fn(usize) -> (usize, Range<usize>),
) -> Vec<Job<'_>> {
    let g = heads_per_job(rows, heads);
    let mut jobs = Vec::new();
    for (r, slab) in states.chunks_exact_mut(heads * kv).enumerate() {
        let (b, range) = row_of(r);
        for (gi, st) in slab.chunks_mut(g * kv).enumerate() {
            let first = gi * g;
            jobs.push(Job {
                b,
                range: range.clone(),
                heads: first..first + st.len() / kv,
                states: st,
            });
        }
    }
    jobs
}

/// Run every job: outputs into `out`, final states in place.
fn run_jobs<T: CpuElement>(
    x: &Inputs<'_, T>,
    jobs: Vec<Job<'_>>,
    c: usize,
    log2g: &[f32],
    zero_init: bool,
    out: &SharedOut<'_, T>,
) {
    let (dk, dv) = (x.dk, x.dv);
    let threads = rayon::current_num_threads();
    let longest = jobs.iter().map(|j| j.range.len()).max().unwrap_or(0);
    let c = c.min(longest).max(1);
    if jobs.len() >= threads || longest < 4 * c {
        jobs.into_par_iter().for_each_init(
            || Tiles::new(c, dk, dv),
            |tiles, job| {
                // SAFETY: jobs cover distinct (row, head) pairs, so the output rows each
                // writes are its own.
                unsafe {
                    chunkwise_heads(
                        x,
                        job.b,
                        job.range,
                        job.heads,
                        c,
                        log2g,
                        job.states,
                        zero_init,
                        &Emit::Outputs(out),
                        tiles,
                    );
                }
            },
        );
        return;
    }
    let parts = (2 * threads).div_ceil(jobs.len());
    for mut job in jobs {
        run_segmented(x, &mut job, c, parts, log2g, zero_init, out);
    }
}

/// One long sequence cut into up to `parts` segments of whole chunks (see the module docs).
fn run_segmented<T: CpuElement>(
    x: &Inputs<'_, T>,
    job: &mut Job<'_>,
    c: usize,
    parts: usize,
    log2g: &[f32],
    zero_init: bool,
    out: &SharedOut<'_, T>,
) {
    let (dk, dv) = (x.dk, x.dv);
    // Only reached with fewer (row, head) pairs than threads: one head per job.
    debug_assert_eq!(job.heads.len(), 1);
    let heads = job.heads.clone();
    let n = job.range.len();
    let seg = n.div_ceil(parts).div_ceil(c) * c;
    let segments: Vec<Range<usize>> = (0..n.div_ceil(seg))
        .map(|s| job.range.start + s * seg..job.range.start + ((s + 1) * seg).min(n))
        .collect();
    // Pass 1: each segment's own contribution, from a zero state (the last one is not needed).
    let mut own: Vec<Vec<f32>> = vec![vec![0.0; dk * dv]; segments.len() - 1];
    own.par_iter_mut().zip(&segments).for_each_init(
        || Tiles::new(c, dk, dv),
        |tiles, (state, range)| {
            // SAFETY: StateOnly writes no output.
            unsafe {
                chunkwise_heads(
                    x,
                    job.b,
                    range.clone(),
                    heads.clone(),
                    c,
                    log2g,
                    state,
                    true,
                    &Emit::StateOnly,
                    tiles,
                );
            }
        },
    );
    // Scan: incoming state of segment s+1 = γ^len(s) · incoming(s) + own(s).
    let mut incoming: Vec<Vec<f32>> = Vec::with_capacity(segments.len());
    incoming.push(job.states.to_vec());
    for (s, contrib) in own.iter().enumerate() {
        let g = (segments[s].len() as f32 * log2g[heads.start]).exp2();
        let next: Vec<f32> = incoming[s]
            .iter()
            .zip(contrib)
            .map(|(r, d)| g * r + d)
            .collect();
        incoming.push(next);
    }
    // Pass 2: outputs of every segment from its incoming state; the last one ends at H_T.
    incoming
        .par_iter_mut()
        .zip(&segments)
        .enumerate()
        .for_each_init(
            || Tiles::new(c, dk, dv),
            |tiles, (s, (state, range))| {
                // SAFETY: segments are disjoint token ranges of one (row, head).
                unsafe {
                    chunkwise_heads(
                        x,
                        job.b,
                        range.clone(),
                        heads.clone(),
                        c,
                        log2g,
                        state,
                        s == 0 && zero_init,
                        &Emit::Outputs(out),
                        tiles,
                    );
                }
            },
        );
    job.states.copy_from_slice(&incoming[segments.len() - 1]);
}

/// Chunkwise retention with chunk size `chunk` (any C ≥ 1; C need not divide T; C > T is one
/// partial chunk). `h0` is `[B, H, K, V]` f32. Returns (o `[B, T, H, V]` in the input dtype,
/// H_T `[B, H, K, V]` f32).
///
/// # Errors
/// As [`crate::reference::chunkwise`]: zero chunk, shape mismatches, gammas, scale.
pub fn chunkwise<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
) -> Result<(HostTensor<T>, HostTensor<f32>)> {
    let (mut o, mut ht) = outputs(q, k, v, q.shape().first().copied().unwrap_or(0));
    let out = (o.view_mut(), ht.view_mut());
    chunkwise_into(
        q.view(),
        k.view(),
        v.view(),
        params,
        chunk,
        h0.map(|h| h.view()),
        out,
    )?;
    Ok((o, ht))
}

/// Chunkwise retention over a packed variable-length batch: q, k `[1, ΣT, H, K]`, v
/// `[1, ΣT, H, V]`, one sequence per `cu_seqlens` range; chunks restart at every sequence
/// boundary. `h0` is `[N, H, K, V]`. Returns (o, H_T `[N, H, K, V]`).
///
/// # Errors
/// As [`crate::reference::chunkwise_varlen`]: B ≠ 1, `cu_seqlens` not ending at ΣT, zero
/// chunk, shape mismatches, gammas, scale.
pub fn chunkwise_varlen<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f32>>,
) -> Result<(HostTensor<T>, HostTensor<f32>)> {
    let (mut o, mut ht) = outputs(q, k, v, cu_seqlens.num_seqs());
    let (qv, kv, vv) = (q.view(), k.view(), v.view());
    let out = (o.view_mut(), ht.view_mut());
    chunkwise_varlen_into(
        qv,
        kv,
        vv,
        cu_seqlens,
        params,
        chunk,
        h0.map(|h| h.view()),
        out,
    )?;
    Ok((o, ht))
}

/// Zeroed outputs for `rows` states, shaped from the inputs (validated by the `_into` call).
fn outputs<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    rows: usize,
) -> (HostTensor<T>, HostTensor<f32>) {
    let heads = q.shape().get(2).copied().unwrap_or(0);
    let dk = k.shape().last().copied().unwrap_or(0);
    let dv = v.shape().last().copied().unwrap_or(0);
    (
        HostTensor::zeros(v.shape()),
        HostTensor::zeros(vec![rows, heads, dk, dv]),
    )
}

/// The outputs of a chunkwise call: o `[B, T, H, V]` and H_T `[rows, H, K, V]`.
pub type ChunkwiseOut<'a, T> = (TensorViewMut<'a, T>, TensorViewMut<'a, f32>);

/// [`chunkwise`] into a caller's o and H_T (every element written), allocating nothing but
/// per-thread tiles and the job list.
///
/// # Errors
/// As [`chunkwise`], plus an o or H_T of the wrong shape.
pub fn chunkwise_into<T: CpuElement>(
    q: TensorView<'_, T>,
    k: TensorView<'_, T>,
    v: TensorView<'_, T>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<TensorView<'_, f32>>,
    out: ChunkwiseOut<'_, T>,
) -> Result<()> {
    let rows = q.shape().first().copied().unwrap_or(0);
    run_into(
        q,
        k,
        v,
        params,
        chunk,
        h0,
        out,
        rows,
        |b| (b, 0..q.shape()[1]),
        None,
    )
}

/// [`chunkwise_varlen`] into a caller's o and H_T `[N, H, K, V]` (every element written).
///
/// # Errors
/// As [`chunkwise_varlen`], plus an o or H_T of the wrong shape.
#[allow(clippy::too_many_arguments)] // the varlen form of chunkwise_into: one more input
pub fn chunkwise_varlen_into<T: CpuElement>(
    q: TensorView<'_, T>,
    k: TensorView<'_, T>,
    v: TensorView<'_, T>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<TensorView<'_, f32>>,
    out: ChunkwiseOut<'_, T>,
) -> Result<()> {
    let n = cu_seqlens.num_seqs();
    let row_of = |seq| (0, cu_seqlens.range(seq));
    run_into(q, k, v, params, chunk, h0, out, n, row_of, Some(cu_seqlens))
}

/// Validate, seed H_T from h0 (or zeros) and run every (row, head group) job; `row_of(r)`
/// gives state row r's (batch row, token range).
#[allow(clippy::too_many_arguments)]
fn run_into<T: CpuElement>(
    q: TensorView<'_, T>,
    k: TensorView<'_, T>,
    v: TensorView<'_, T>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<TensorView<'_, f32>>,
    (mut o, mut ht): ChunkwiseOut<'_, T>,
    rows: usize,
    row_of: impl Fn(usize) -> (usize, Range<usize>),
    cu_seqlens: Option<&CuSeqlens>,
) -> Result<()> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let dims = check_qkv_views(&q, &k, &v, params)?;
    let s = dims.shape;
    if let Some(cu) = cu_seqlens {
        check_packed(&s, cu)?;
    }
    check_state_view(h0.as_ref(), &s, rows)?;
    expect_shape("o", &VO_AXES, o.shape(), &s.vo_shape())?;
    expect_shape("ht", &STATE_AXES, ht.shape(), &s.state_shape(rows))?;
    match &h0 {
        Some(h0) => ht.data_mut().copy_from_slice(h0.data()),
        None => ht.data_mut().fill(0.0),
    }
    let x = Inputs {
        q: q.data(),
        k: k.data(),
        v: v.data(),
        seq_len: s.seq_len,
        heads: s.heads,
        dk: s.dk,
        dv: s.dv,
        scale: dims.scale,
    };
    let jobs = make_jobs(ht.data_mut(), rows, s.heads, s.state_len(), row_of);
    let out = SharedOut::new(o.data_mut());
    run_jobs(&x, jobs, chunk, &dims.log2g, h0.is_none(), &out);
    Ok(())
}
