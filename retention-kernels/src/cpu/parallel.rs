//! Parallel form O = s·((Q Kᵀ) ⊙ D) V, tiled: one task per (row, head, query block), each
//! walking key blocks from the diagonal backwards until the decay underflows to 0 in f32.

use rayon::prelude::*;
use retention_core::{HostTensor, Result, TensorView, TensorViewMut};

use super::chunk_kernel::{Inputs, Tiles};
use super::element::CpuElement;
use super::matmul::{View, matmul};
use super::shared_out::SharedOut;
use super::validate::{VO_AXES, check_qkv_views, expect_shape};
use crate::reference::RetentionParams;

/// Query and key block length.
const BLOCK: usize = 64;

/// Parallel retention (no initial or final state). Returns o `[B, T, H, V]`.
///
/// # Errors
/// As [`crate::reference::parallel`]: shape mismatches, gammas, scale.
pub fn parallel<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    params: &RetentionParams,
) -> Result<HostTensor<T>> {
    let mut o = HostTensor::<T>::zeros(v.shape());
    parallel_into(q.view(), k.view(), v.view(), params, o.view_mut())?;
    Ok(o)
}

/// [`parallel`] into a caller's o `[B, T, H, V]` (every element written), allocating
/// nothing but per-thread tiles.
///
/// # Errors
/// As [`parallel`], plus an o of the wrong shape.
pub fn parallel_into<T: CpuElement>(
    q: TensorView<'_, T>,
    k: TensorView<'_, T>,
    v: TensorView<'_, T>,
    params: &RetentionParams,
    mut o: TensorViewMut<'_, T>,
) -> Result<()> {
    let dims = check_qkv_views(&q, &k, &v, params)?;
    let s = dims.shape;
    expect_shape("o", &VO_AXES, o.shape(), &s.vo_shape())?;
    let (dk, dv, tlen) = (s.dk, s.dv, s.seq_len);
    let blk = BLOCK.min(tlen);
    let nblk = tlen.div_ceil(blk);
    let x = Inputs {
        q: q.data(),
        k: k.data(),
        v: v.data(),
        seq_len: tlen,
        heads: s.heads,
        dk,
        dv,
        scale: dims.scale,
    };
    let out = SharedOut::new(o.data_mut());
    (0..s.batch * s.heads * nblk).into_par_iter().for_each_init(
        // Two tile sets: `qt` holds the query block, `kt` the current key block.
        || {
            (
                Tiles::new(blk, dk, dv),
                Tiles::new(blk, dk, dv),
                vec![0.0f32; 2 * blk],
            )
        },
        |(qt, kt, band), task| {
            let (bh, qb) = (task / nblk, task % nblk);
            let (b, h) = (bh / s.heads, bh % s.heads);
            let lg = dims.log2g[h];
            let q0 = qb * blk;
            let qlen = blk.min(tlen - q0);
            x.load(b, q0..q0 + qlen, h, qt);
            let mut first = true;
            for kb in (0..=qb).rev() {
                let k0 = kb * blk;
                let klen = blk.min(tlen - k0);
                // D[j, i] = γ^(Δ + j − i) with Δ = q0 − k0, held at band[qlen − 1 − j + i] so
                // each row of D is a forward run of the band.
                let delta = (q0 - k0) as isize;
                let nearest = delta - (klen as isize - 1);
                if nearest > 0 && (nearest as f32 * lg).exp2() == 0.0 {
                    break; // every decay in this block and all earlier ones is exactly 0
                }
                for (idx, d) in band.iter_mut().enumerate().take(qlen + klen - 1) {
                    let n = delta + (qlen as isize - 1) - idx as isize;
                    *d = if n >= 0 { (n as f32 * lg).exp2() } else { 0.0 };
                }
                x.load_kv(b, k0..k0 + klen, h, kt);
                let a = &mut kt.a;
                matmul(
                    qlen,
                    klen,
                    dk,
                    a,
                    klen,
                    None,
                    View::rows(&qt.q, dk),
                    View::transposed(&kt.k, dk),
                );
                for (j, arow) in a.chunks_exact_mut(klen).take(qlen).enumerate() {
                    for (aji, d) in arow.iter_mut().zip(&band[qlen - 1 - j..]) {
                        *aji *= d;
                    }
                }
                let acc = if first { None } else { Some(1.0) };
                matmul(
                    qlen,
                    dv,
                    klen,
                    &mut qt.o,
                    dv,
                    acc,
                    View::rows(a, klen),
                    View::rows(&kt.v, dv),
                );
                first = false;
            }
            // SAFETY: this task alone owns rows (b, q0..q0+qlen, h).
            unsafe { x.store(b, q0..q0 + qlen, h, &qt.o, &out) };
        },
    );
    Ok(())
}
