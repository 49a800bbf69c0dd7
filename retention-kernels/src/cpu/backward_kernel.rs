//! The chunkwise backward of one head over one token range — the shared core of the dense and
//! varlen CPU backward. With the chunk-entering state R = R_{i−1}, its adjoint dR = dR_i (ARCHITECTURE
//! §7, `reference::chunkwise_backward`), chunk length L, D(j, i) = γ^{j−i} (i ≤ j),
//! ξ_j = γ^{j+1}, ζ_j = γ^{L−1−j}, A = Q Kᵀ and M = (s dO Vᵀ) ⊙ D:
//!
//! dQ = s (dO ⊙ ξ) Rᵀ + M K;        dK = (V ⊙ ζ) dRᵀ + Mᵀ Q;
//! dV = (s A ⊙ D)ᵀ dO + (K ⊙ ζ) dR;  dR ← γ^L dR + Qᵀ (s dO ⊙ ξ);
//! dlog γ += Σ_{j≥i}(j−i) M_ji A_ji + Σ_j (j+1) ⟨q_j, dQ^R_j⟩ + L γ^L ⟨dR, R⟩
//!           + Σ_j (L−1−j) ⟨k_j, dK^R_j⟩
//!
//! (dQ^R, dK^R the state terms, taken before the intra-chunk terms are added). Nine products
//! per chunk through [`matmul`]: 2L²(3K + 2V) + 8LKV FLOPs. The scale and ξ are folded into
//! one copy of dO, ζ into K and V in place once their raw values are no longer needed.

use std::ops::Range;

use super::chunk_kernel::{PREFETCH_AHEAD, prefetch};
use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::shared_out::SharedOut;
use super::simd;
use super::validate::decay_table;

/// Borrowed inputs and upstream gradient of the backward, token-major as the forward's.
pub(crate) struct BackwardInputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub d_o: &'a [T],
    pub seq_len: usize,
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f32,
}

/// The gradient outputs, written through disjoint (token, head) rows.
pub(crate) struct BackwardOutputs<'o, 'a, T> {
    pub dq: &'o SharedOut<'a, T>,
    pub dk: &'o SharedOut<'a, T>,
    pub dv: &'o SharedOut<'a, T>,
}

impl<T: CpuElement> BackwardInputs<'_, T> {
    /// Index of token `t` of row `b`, head `h` in units of one head's row.
    fn row(&self, b: usize, t: usize, h: usize) -> usize {
        (b * self.seq_len + t) * self.heads + h
    }

    /// Widen rows of `src` (`d` wide) for tokens `range` into the row-major tile `dst`.
    pub(crate) fn load(
        &self,
        src: &[T],
        d: usize,
        b: usize,
        range: Range<usize>,
        h: usize,
        dst: &mut [f32],
    ) {
        let end = range.end;
        for (j, t) in range.enumerate() {
            // One head's rows are H·d elements apart: request them early (see chunk_kernel).
            if t + PREFETCH_AHEAD < end {
                let ahead = self.row(b, t + PREFETCH_AHEAD, h);
                prefetch(&src[ahead * d..(ahead + 1) * d]);
            }
            let r = self.row(b, t, h);
            T::load_f32(&src[r * d..(r + 1) * d], &mut dst[j * d..(j + 1) * d]);
        }
    }

    /// Narrow the tile `src` (`d` wide) into rows of `out` for tokens `range`.
    ///
    /// # Safety
    /// No other task may be writing rows (b, t, h), t ∈ `range`, of `out` concurrently.
    pub(crate) unsafe fn store(
        &self,
        src: &[f32],
        d: usize,
        b: usize,
        range: Range<usize>,
        h: usize,
        out: &SharedOut<'_, T>,
    ) {
        for (j, t) in range.enumerate() {
            // SAFETY: the caller owns rows (b, t, h) for t in `range` exclusively.
            let dst = unsafe { out.rows(self.row(b, t, h) * d, d) };
            T::store_f32(&src[j * d..(j + 1) * d], dst);
        }
    }
}

/// Per-task f32 working tiles for chunks of up to `c` tokens.
pub(crate) struct BackwardTiles {
    q: Vec<f32>,   // (C, K)
    k: Vec<f32>,   // (C, K)
    v: Vec<f32>,   // (C, V)
    d_o: Vec<f32>, // (C, V)
    w: Vec<f32>,   // (C, V): s ξ ⊙ dO
    a: Vec<f32>,   // (C, C): Q Kᵀ, then s A ⊙ D
    m: Vec<f32>,   // (C, C): dO Vᵀ, then M
    dq: Vec<f32>,  // (C, K)
    dk: Vec<f32>,  // (C, K)
    dv: Vec<f32>,  // (C, V)
    pow: Vec<f32>, // (C + 1): γ^n
}

impl BackwardTiles {
    /// Tiles for chunks of up to `c` tokens with head dims `dk`, `dv`.
    pub fn new(c: usize, dk: usize, dv: usize) -> Self {
        Self {
            q: vec![0.0; c * dk],
            k: vec![0.0; c * dk],
            v: vec![0.0; c * dv],
            d_o: vec![0.0; c * dv],
            w: vec![0.0; c * dv],
            a: vec![0.0; c * c],
            m: vec![0.0; c * c],
            dq: vec![0.0; c * dk],
            dk: vec![0.0; c * dk],
            dv: vec![0.0; c * dv],
            pow: Vec::with_capacity(c + 1),
        }
    }
}

/// Reverse sweep over the chunks of tokens `range` (chunk `c`, the last may be shorter) of
/// row `b`, head `h`. `entering[i]` is the K×V state entering chunk i (`None`: zero); `adj`
/// holds dH_T on entry and dH0 on return. Returns this range's dL/dlog γ_h.
///
/// # Safety
/// No other task may write rows (b, t, h), t ∈ `range`, of the outputs concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward_range<T: CpuElement>(
    x: &BackwardInputs<'_, T>,
    out: &BackwardOutputs<'_, '_, T>,
    b: usize,
    range: Range<usize>,
    h: usize,
    c: usize,
    log2g: f32,
    entering: &[Option<&[f32]>],
    adj: &mut [f32],
    tiles: &mut BackwardTiles,
) -> f64 {
    let n = range.len().div_ceil(c);
    let mut dlog_gamma = 0.0f64;
    for i in (0..n).rev() {
        let start = range.start + i * c;
        let chunk = start..(start + c).min(range.end);
        // SAFETY: forwarded from this function's contract.
        let part =
            unsafe { backward_chunk(x, out, b, chunk, h, log2g, entering[i], adj, true, tiles) };
        dlog_gamma += f64::from(part);
    }
    dlog_gamma
}

/// dQ, dK, dV of tokens `chunk` (row `b`, head `h`) from the state entering it (`r_prev`,
/// `None`: zero) and the adjoint of the state leaving it (`adj` = dR_i). With `advance`,
/// `adj` becomes dR_{i−1}; otherwise it is left as it was. Returns the chunk's share of
/// dL/dlog γ_h.
///
/// # Safety
/// No other task may write rows (b, t, h), t ∈ `chunk`, of the outputs concurrently.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn backward_chunk<T: CpuElement>(
    x: &BackwardInputs<'_, T>,
    out: &BackwardOutputs<'_, '_, T>,
    b: usize,
    chunk: Range<usize>,
    h: usize,
    log2g: f32,
    r_prev: Option<&[f32]>,
    adj: &mut [f32],
    advance: bool,
    tiles: &mut BackwardTiles,
) -> f32 {
    let (dk, dv, s, len) = (x.dk, x.dv, x.scale, chunk.len());
    {
        decay_table(log2g, len, &mut tiles.pow);
        let BackwardTiles {
            q,
            k,
            v,
            d_o,
            w,
            a,
            m,
            dq,
            dk: dkt,
            dv: dvt,
            pow,
        } = tiles;
        x.load(x.q, dk, b, chunk.clone(), h, q);
        x.load(x.k, dk, b, chunk.clone(), h, k);
        x.load(x.v, dv, b, chunk.clone(), h, v);
        x.load(x.d_o, dv, b, chunk.clone(), h, d_o);
        // A = Q Kᵀ, then dO Vᵀ  (L, L)
        matmul(
            len,
            len,
            dk,
            a,
            len,
            None,
            View::rows(q, dk),
            View::transposed(k, dk),
        );
        matmul(
            len,
            len,
            dv,
            m,
            len,
            None,
            View::rows(d_o, dv),
            View::transposed(v, dv),
        );
        // M = s dO Vᵀ ⊙ D; s A ⊙ D; the intra-chunk d log γ term on the way.
        let mut part = 0.0f32;
        for j in 0..len {
            let (arow, mrow) = (
                &mut a[j * len..(j + 1) * len],
                &mut m[j * len..(j + 1) * len],
            );
            for i2 in 0..=j {
                let d = s * pow[j - i2];
                mrow[i2] *= d;
                part += (j - i2) as f32 * mrow[i2] * arow[i2];
                arow[i2] *= d;
            }
            arow[j + 1..].fill(0.0);
            mrow[j + 1..].fill(0.0);
        }
        // w = s ξ ⊙ dO.
        w[..len * dv].copy_from_slice(&d_o[..len * dv]);
        for (j, wrow) in w.chunks_exact_mut(dv).take(len).enumerate() {
            simd::scale(wrow, s * pow[j + 1]);
        }
        // dQ = w Rᵀ (+ its d log γ term), then += M K.
        match r_prev {
            Some(r) => {
                matmul(
                    len,
                    dk,
                    dv,
                    dq,
                    dk,
                    None,
                    View::rows(w, dv),
                    View::transposed(r, dv),
                );
                for j in 0..len {
                    let row = j * dk..(j + 1) * dk;
                    part += (j + 1) as f32 * simd::dot(&q[row.clone()], &dq[row]);
                }
            }
            None => dq[..len * dk].fill(0.0),
        }
        matmul(
            len,
            dk,
            len,
            dq,
            dk,
            Some(1.0),
            View::rows(m, len),
            View::rows(k, dk),
        );
        // dK = (V ⊙ ζ) dRᵀ (+ its d log γ term), then += Mᵀ Q.
        for (j, vrow) in v.chunks_exact_mut(dv).take(len).enumerate() {
            simd::scale(vrow, pow[len - 1 - j]);
        }
        matmul(
            len,
            dk,
            dv,
            dkt,
            dk,
            None,
            View::rows(v, dv),
            View::transposed(adj, dv),
        );
        for j in 0..len {
            let row = j * dk..(j + 1) * dk;
            part += (len - 1 - j) as f32 * simd::dot(&k[row.clone()], &dkt[row]);
        }
        matmul(
            len,
            dk,
            len,
            dkt,
            dk,
            Some(1.0),
            View::transposed(m, len),
            View::rows(q, dk),
        );
        // dV = (s A ⊙ D)ᵀ dO + (K ⊙ ζ) dR.
        matmul(
            len,
            dv,
            len,
            dvt,
            dv,
            None,
            View::transposed(a, len),
            View::rows(d_o, dv),
        );
        for (j, krow) in k.chunks_exact_mut(dk).take(len).enumerate() {
            simd::scale(krow, pow[len - 1 - j]);
        }
        matmul(
            len,
            dv,
            dk,
            dvt,
            dv,
            Some(1.0),
            View::rows(k, dk),
            View::rows(adj, dv),
        );
        // dR_{i−1} = γ^L dR_i + Qᵀ w, after its d log γ term L γ^L ⟨dR_i, R_{i−1}⟩.
        if let Some(r) = r_prev {
            part += len as f32 * pow[len] * simd::dot(adj, r);
        }
        if advance {
            matmul(
                dk,
                dv,
                len,
                adj,
                dv,
                Some(pow[len]),
                View::transposed(q, dk),
                View::rows(w, dv),
            );
        }
        // SAFETY: forwarded from this function's contract.
        unsafe {
            x.store(dq, dk, b, chunk.clone(), h, out.dq);
            x.store(dkt, dk, b, chunk.clone(), h, out.dk);
            x.store(dvt, dv, b, chunk, h, out.dv);
        }
        part
    }
}

/// W = Qᵀ (s ξ ⊙ dO) of tokens `chunk` (row `b`, head `h`) into `dst` (K×V): the chunk's own
/// term of dR_{i−1} = γ^L dR_i + W, for the chunk-parallel reverse scan.
pub(crate) fn adjoint_contribution<T: CpuElement>(
    x: &BackwardInputs<'_, T>,
    b: usize,
    chunk: Range<usize>,
    h: usize,
    log2g: f32,
    dst: &mut [f32],
    tiles: &mut BackwardTiles,
) {
    let (dk, dv, len) = (x.dk, x.dv, chunk.len());
    decay_table(log2g, len, &mut tiles.pow);
    x.load(x.q, dk, b, chunk.clone(), h, &mut tiles.q);
    x.load(x.d_o, dv, b, chunk, h, &mut tiles.w);
    for (j, wrow) in tiles.w.chunks_exact_mut(dv).take(len).enumerate() {
        simd::scale(wrow, x.scale * tiles.pow[j + 1]);
    }
    matmul(
        dk,
        dv,
        len,
        dst,
        dv,
        None,
        View::transposed(&tiles.q, dk),
        View::rows(&tiles.w, dv),
    );
}
