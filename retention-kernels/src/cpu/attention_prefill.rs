//! The Transformer's prefill, the baseline of RetNet's chunkwise prefill: causal softmax
//! attention of a whole prompt, in blocks (flash-attention's order, on the CPU):
//!
//! ```text
//! o[n,t,h] = Σ_{u ≤ t} softmax_u(s · q[n,t,h]·k[n,u,h]) v[n,u,h]
//! ```
//!
//! Per (sequence, head) and block of `BLOCK` queries, the key blocks up to the diagonal one
//! each give S = (s·Q)·Kᵀ (one gemm), masked above the diagonal in the diagonal block; a
//! running row max m and normaliser l rescale the accumulator O (online softmax), then
//! O += P·V (one gemm); O / l at the end. Work: ≈ T²·H·(K + V) FLOPs a sequence — half the
//! full square. Inputs are widened once to f32, head-major (each head's prompt contiguous),
//! so the products read unit-stride rows; accumulation is f32 whatever the input type.
//!
//! Layouts as the projections produce them (token-major): q, k `[N, T, H, K]`, v and o
//! `[N, T, H, V]` — the retention forward's layouts (ARCHITECTURE §1).

use rayon::prelude::*;
use retention_core::{HostTensor, Result, validate_scale};

use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::simd::scale;
use crate::validate::check_qkv_layout;

/// Queries (and keys) per block: the gemm tiles' rows.
const BLOCK: usize = 64;

/// Causal softmax attention of every prompt position over the positions up to it: q, k
/// `[N, T, H, K]`, v `[N, T, H, V]`; returns o `[N, T, H, V]`, with `scale` s defaulting to
/// K^(-1/2).
///
/// # Errors
/// Rank or axis mismatches between q, k and v (named axes), a zero dimension, a non-finite
/// scale.
pub fn attention_prefill<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    scale: Option<f64>,
) -> Result<HostTensor<T>> {
    let shape = check_qkv_layout(q.shape(), k.shape(), v.shape())?;
    let (n, t, h, dk, dv) = (shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv);
    let s = validate_scale(scale, dk)? as f32;

    let qh = head_major(q.data(), (n, t, h, dk), s);
    let kh = head_major(k.data(), (n, t, h, dk), 1.0);
    let vh = head_major(v.data(), (n, t, h, dv), 1.0);
    let mut oh = vec![0.0f32; n * h * t * dv]; // (N·H, T, V)
    oh.par_chunks_mut(t * dv)
        .enumerate()
        .for_each(|(nh, o_head)| {
            let head = Head {
                q: &qh[nh * t * dk..(nh + 1) * t * dk],
                k: &kh[nh * t * dk..(nh + 1) * t * dk],
                v: &vh[nh * t * dv..(nh + 1) * t * dv],
                dk,
                dv,
            };
            o_head.par_chunks_mut(BLOCK * dv).enumerate().for_each_init(
                Vec::new,
                |scores, (blk, o_blk)| {
                    head.query_block(blk * BLOCK, o_blk, scores);
                },
            );
        });

    let mut o = HostTensor::<T>::zeros(vec![n, t, h, dv]);
    o.data_mut()
        .par_chunks_mut(h * dv)
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, pos) = (row / t, row % t);
            for (head, d) in dst.chunks_exact_mut(dv).enumerate() {
                let at = ((b * h + head) * t + pos) * dv;
                T::store_f32(&oh[at..at + dv], d);
            }
        });
    Ok(o)
}

/// `[N, T, H, D]` token-major → `[N, H, T, D]` f32, each element times `factor`.
fn head_major<T: CpuElement>(
    src: &[T],
    (n, t, h, d): (usize, usize, usize, usize),
    factor: f32,
) -> Vec<f32> {
    let mut out = vec![0.0f32; n * h * t * d];
    out.par_chunks_mut(t * d).enumerate().for_each(|(nh, dst)| {
        let (b, head) = (nh / h, nh % h);
        for (pos, row) in dst.chunks_exact_mut(d).enumerate() {
            let at = ((b * t + pos) * h + head) * d;
            T::load_f32(&src[at..at + d], row);
            if factor != 1.0 {
                scale(row, factor);
            }
        }
    });
    out
}

/// One (sequence, head): its scaled queries, keys and values, f32 row-major `[T, ·]`.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    dk: usize,
    dv: usize,
}

impl Head<'_> {
    /// Rows `r0 .. r0 + o_blk.len()/V` of the output: every key block up to the diagonal.
    fn query_block(&self, r0: usize, o_blk: &mut [f32], scores: &mut Vec<f32>) {
        let (dk, dv) = (self.dk, self.dv);
        let rows = o_blk.len() / dv;
        let r1 = r0 + rows;
        let q_blk = &self.q[r0 * dk..r1 * dk]; // (rows, K)
        let mut m = vec![f32::NEG_INFINITY; rows];
        let mut l = vec![0.0f32; rows];
        o_blk.fill(0.0);
        for c0 in (0..r1).step_by(BLOCK) {
            let cols = (c0 + BLOCK).min(r1) - c0;
            scores.resize(rows * cols, 0.0);
            let sc = &mut scores[..rows * cols]; // (rows, cols)
            let k_blk = &self.k[c0 * dk..(c0 + cols) * dk]; // (cols, K)
            matmul(
                rows,
                cols,
                dk,
                sc,
                cols,
                None,
                View::rows(q_blk, dk),
                View::transposed(k_blk, dk),
            );
            for (i, (s_row, o_row)) in sc
                .chunks_exact_mut(cols)
                .zip(o_blk.chunks_exact_mut(dv))
                .enumerate()
            {
                // Keys after the query (only in the diagonal block, where c0 = r0) are masked.
                let visible = (r0 + i + 1).saturating_sub(c0).min(cols);
                s_row[visible..].fill(f32::NEG_INFINITY);
                let block_max = s_row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let new_m = m[i].max(block_max);
                let corr = (m[i] - new_m).exp(); // 0 on the first block (m = −∞)
                let mut sum = 0.0f32;
                for x in s_row.iter_mut() {
                    *x = (*x - new_m).exp();
                    sum += *x;
                }
                l[i] = l[i] * corr + sum;
                m[i] = new_m;
                scale(o_row, corr);
            }
            let v_blk = &self.v[c0 * dv..(c0 + cols) * dv]; // (cols, V)
            matmul(
                rows,
                dv,
                cols,
                o_blk,
                dv,
                Some(1.0),
                View::rows(sc, cols),
                View::rows(v_blk, dv),
            );
        }
        for (o_row, li) in o_blk.chunks_exact_mut(dv).zip(&l) {
            scale(o_row, 1.0 / li);
        }
    }
}
