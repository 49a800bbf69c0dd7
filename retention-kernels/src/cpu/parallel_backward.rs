//! Backward of the parallel form O = s·((Q Kᵀ) ⊙ D) V, tiled as the forward
//! ([`super::parallel`]). With M = (s dO Vᵀ) ⊙ D and P = (s Q Kᵀ) ⊙ D:
//!
//! dQ = M K;  dK = Mᵀ Q;  dV = Pᵀ dO;  dL/dlog γ = Σ_{n≥m} (n−m) M_nm (Q Kᵀ)_nm.
//!
//! Two passes of independent tasks. Pass 1, one task per (row, head, query block): dQ of the
//! block over key blocks from the diagonal backwards. Pass 2, one task per (row, head, key
//! block): dK, dV and the block's d log γ over query blocks from the diagonal forwards. Both
//! stop where every decay of a block underflows to 0 in f32. Per pair of blocks (b_q, b_k
//! tokens): 2 b_q b_k (3K + 3V) FLOPs (dO Vᵀ twice and Q Kᵀ once, plus the three products).

use rayon::prelude::*;
use retention_core::{HostTensor, Result};

use super::backward_kernel::BackwardInputs;
use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::shared_out::SharedOut;
use super::validate::{VO_AXES, check_qkv};
use crate::reference::RetentionParams;

/// Query and key block length.
const BLOCK: usize = 64;

/// Gradients of the parallel form: dq, dk, dv in the input dtype; d log γ in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuParallelGradients<T: CpuElement> {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<T>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<T>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<T>,
    /// dL/dlog γ_h `[H]`, summed over rows and tokens.
    pub dlog_gamma: HostTensor<f32>,
}

/// Per-task tiles: a query block and a key block of q, k, v, dO, two score blocks, and the
/// gradient accumulators of one block.
struct Tiles {
    q: Vec<f32>,   // (B, K)
    d_o: Vec<f32>, // (B, V)
    k: Vec<f32>,   // (B, K)
    v: Vec<f32>,   // (B, V)
    a: Vec<f32>,   // (B, B)
    m: Vec<f32>,   // (B, B)
    g1: Vec<f32>,  // (B, K): dQ or dK
    g2: Vec<f32>,  // (B, V): dV
    band: Vec<f32>,
}

impl Tiles {
    fn new(blk: usize, dk: usize, dv: usize) -> Self {
        Self {
            q: vec![0.0; blk * dk],
            d_o: vec![0.0; blk * dv],
            k: vec![0.0; blk * dk],
            v: vec![0.0; blk * dv],
            a: vec![0.0; blk * blk],
            m: vec![0.0; blk * blk],
            g1: vec![0.0; blk * dk],
            g2: vec![0.0; blk * dv],
            band: vec![0.0; 2 * blk],
        }
    }

    /// m ← dO Vᵀ over the staged query rows (`qlen`) and key rows (`klen`): the product
    /// both passes mask with the band (dQ from it, dK and d log γ from it).
    fn do_vt(&mut self, qlen: usize, klen: usize, dv: usize) {
        matmul(
            qlen,
            klen,
            dv,
            &mut self.m,
            klen,
            None,
            View::rows(&self.d_o, dv),
            View::transposed(&self.v, dv),
        );
    }
}

/// s·D of a (query block at `q0`, length `qlen`) × (key block at `k0`, length `klen`) pair,
/// as a band: entry (j, i) is `band[qlen − 1 − j + i]` = s γ^(q0 + j − k0 − i), 0 where
/// negative. Returns false when every entry of this pair (and of every pair farther from the
/// diagonal) is exactly 0.
fn fill_band(
    band: &mut [f32],
    q0: usize,
    qlen: usize,
    k0: usize,
    klen: usize,
    lg: f32,
    s: f32,
) -> bool {
    let delta = q0 as isize - k0 as isize;
    let nearest = delta - (klen as isize - 1);
    if nearest > 0 && (nearest as f32 * lg).exp2() == 0.0 {
        return false;
    }
    for (idx, d) in band.iter_mut().enumerate().take(qlen + klen - 1) {
        let n = delta + (qlen as isize - 1) - idx as isize;
        *d = if n >= 0 {
            s * (n as f32 * lg).exp2()
        } else {
            0.0
        };
    }
    true
}

/// Gradients of [`super::parallel`] for the upstream gradient `d_o` `[B, T, H, V]`.
///
/// # Errors
/// As [`super::parallel`], plus a shape mismatch of `d_o`.
pub fn parallel_backward<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
    d_o: &HostTensor<T>,
) -> Result<CpuParallelGradients<T>> {
    let dims = check_qkv(q, k, v, params)?;
    let sh = dims.shape;
    d_o.expect_shape("d_o", &VO_AXES, &sh.vo_shape())?;
    let (dk, dv, tlen, s) = (sh.dk, sh.dv, sh.seq_len, dims.scale);
    let blk = BLOCK.min(tlen);
    let nblk = tlen.div_ceil(blk);
    let x = BackwardInputs {
        q: q.data(),
        k: k.data(),
        v: v.data(),
        d_o: d_o.data(),
        seq_len: tlen,
        heads: sh.heads,
        dk,
        dv,
        scale: s,
    };
    let mut dq = HostTensor::<T>::zeros(sh.qk_shape());
    let mut dkt = HostTensor::<T>::zeros(sh.qk_shape());
    let mut dvt = HostTensor::<T>::zeros(sh.vo_shape());
    let (oq, ok, ov) = (
        SharedOut::new(dq.data_mut()),
        SharedOut::new(dkt.data_mut()),
        SharedOut::new(dvt.data_mut()),
    );
    let tasks = sh.batch * sh.heads * nblk;
    let split = |task: usize| {
        let (bh, blk_i) = (task / nblk, task % nblk);
        (bh / sh.heads, bh % sh.heads, blk_i)
    };
    // Pass 1: dQ = M K, query block by query block.
    (0..tasks).into_par_iter().for_each_init(
        || Tiles::new(blk, dk, dv),
        |t, task| {
            let (b, h, qb) = split(task);
            let (q0, lg) = (qb * blk, dims.log2g[h]);
            let qlen = blk.min(tlen - q0);
            x.load(x.d_o, dv, b, q0..q0 + qlen, h, &mut t.d_o);
            let mut first = true;
            for kb in (0..=qb).rev() {
                let k0 = kb * blk;
                let klen = blk.min(tlen - k0);
                if !fill_band(&mut t.band, q0, qlen, k0, klen, lg, s) {
                    break;
                }
                x.load(x.k, dk, b, k0..k0 + klen, h, &mut t.k);
                x.load(x.v, dv, b, k0..k0 + klen, h, &mut t.v);
                t.do_vt(qlen, klen, dv);
                for (j, mrow) in t.m.chunks_exact_mut(klen).take(qlen).enumerate() {
                    for (x, d) in mrow.iter_mut().zip(&t.band[qlen - 1 - j..]) {
                        *x *= d;
                    }
                }
                let acc = if first { None } else { Some(1.0) };
                matmul(
                    qlen,
                    dk,
                    klen,
                    &mut t.g1,
                    dk,
                    acc,
                    View::rows(&t.m, klen),
                    View::rows(&t.k, dk),
                );
                first = false;
            }
            // SAFETY: this task alone owns rows (b, q0..q0+qlen, h) of dq.
            unsafe { x.store(&t.g1, dk, b, q0..q0 + qlen, h, &oq) };
        },
    );
    // Pass 2: dK = Mᵀ Q, dV = Pᵀ dO and d log γ, key block by key block.
    let parts: Vec<f64> = (0..tasks)
        .into_par_iter()
        .map_init(
            || Tiles::new(blk, dk, dv),
            |t, task| {
                let (b, h, kb) = split(task);
                let (k0, lg) = (kb * blk, dims.log2g[h]);
                let klen = blk.min(tlen - k0);
                x.load(x.k, dk, b, k0..k0 + klen, h, &mut t.k);
                x.load(x.v, dv, b, k0..k0 + klen, h, &mut t.v);
                let mut part = 0.0f64;
                let mut first = true;
                for qb in kb..nblk {
                    let q0 = qb * blk;
                    let qlen = blk.min(tlen - q0);
                    if !fill_band(&mut t.band, q0, qlen, k0, klen, lg, s) {
                        break;
                    }
                    x.load(x.q, dk, b, q0..q0 + qlen, h, &mut t.q);
                    x.load(x.d_o, dv, b, q0..q0 + qlen, h, &mut t.d_o);
                    matmul(
                        qlen,
                        klen,
                        dk,
                        &mut t.a,
                        klen,
                        None,
                        View::rows(&t.q, dk),
                        View::transposed(&t.k, dk),
                    );
                    t.do_vt(qlen, klen, dv);
                    let delta = q0 as isize - k0 as isize;
                    let mut block_part = 0.0f32;
                    for j in 0..qlen {
                        let (arow, mrow) = (
                            &mut t.a[j * klen..(j + 1) * klen],
                            &mut t.m[j * klen..(j + 1) * klen],
                        );
                        for (i, ((a, m), d)) in arow
                            .iter_mut()
                            .zip(mrow.iter_mut())
                            .zip(&t.band[qlen - 1 - j..])
                            .enumerate()
                        {
                            *m *= d;
                            let n = delta + j as isize - i as isize;
                            block_part += n.max(0) as f32 * *m * *a;
                            *a *= d;
                        }
                    }
                    part += f64::from(block_part);
                    let acc = if first { None } else { Some(1.0) };
                    matmul(
                        klen,
                        dk,
                        qlen,
                        &mut t.g1,
                        dk,
                        acc,
                        View::transposed(&t.m, klen),
                        View::rows(&t.q, dk),
                    );
                    matmul(
                        klen,
                        dv,
                        qlen,
                        &mut t.g2,
                        dv,
                        acc,
                        View::transposed(&t.a, klen),
                        View::rows(&t.d_o, dv),
                    );
                    first = false;
                }
                // SAFETY: this task alone owns rows (b, k0..k0+klen, h) of dk and dv.
                unsafe {
                    x.store(&t.g1, dk, b, k0..k0 + klen, h, &ok);
                    x.store(&t.g2, dv, b, k0..k0 + klen, h, &ov);
                }
                part
            },
        )
        .collect();
    let mut dlog_gamma = vec![0.0f64; sh.heads];
    for (task, part) in parts.iter().enumerate() {
        dlog_gamma[split(task).1] += part;
    }
    Ok(CpuParallelGradients {
        dq,
        dk: dkt,
        dv: dvt,
        dlog_gamma: HostTensor::new(
            vec![sh.heads],
            dlog_gamma.iter().map(|&x| x as f32).collect(),
        )?,
    })
}
