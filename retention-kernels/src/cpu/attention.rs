//! The Transformer baseline we compare decode against: single-query softmax attention over a
//! KV cache, split over the context (flash-decoding) and merged by log-sum-exp.
//!
//! Written with the same care as the retention kernels — vector dot/axpy paths that widen
//! 16-bit caches on the fly, f32 accumulation, every core busy even at batch 1 — because a slow
//! baseline would flatter retention.

use rayon::prelude::*;
use retention_core::{HostTensor, Result, RetentionError, RetentionShape, validate_scale};

use super::element::CpuElement;
use super::simd::{axpy, scale};
use super::validate::{expect_shape, rank4};

/// Context tokens per split (one parallel task).
const SPLIT: usize = 512;
/// Tokens per tile inside a split (scores of a tile share one max update).
const TILE: usize = 32;

const CACHE_K_AXES: [&str; 4] = ["N", "H", "L", "K"];
const CACHE_V_AXES: [&str; 4] = ["N", "H", "L", "V"];

/// Softmax attention of one query per (sequence, head) over its cached keys and values:
/// q `[N, H, K]`, k_cache `[N, H, L, K]`, v_cache `[N, H, L, V]` (head-major, so each head's
/// context is contiguous). Returns o `[N, H, V]` = Σ_t softmax(s · q·k_t) v_t, with `scale`
/// s defaulting to K^(-1/2).
///
/// # Errors
/// Rank or axis mismatches between q and the caches, a zero dimension, a non-finite scale.
pub fn attention_decode<T: CpuElement>(
    q: &HostTensor<T>,
    k_cache: &HostTensor<T>,
    v_cache: &HostTensor<T>,
    scale_q: Option<f64>,
) -> Result<HostTensor<T>> {
    let qs = q.shape();
    if qs.len() != 3 {
        return Err(RetentionError::ShapeMismatch {
            tensor: "q".into(),
            expected: "rank 3 [N, H, K]".into(),
            got: format!("rank {} {qs:?}", qs.len()),
        });
    }
    let [_, _, ctx, _] = rank4(k_cache.shape(), "k_cache", &CACHE_K_AXES)?;
    let [_, _, _, dv] = rank4(v_cache.shape(), "v_cache", &CACHE_V_AXES)?;
    let (n, heads, dk) = (qs[0], qs[1], qs[2]);
    expect_shape(
        "k_cache",
        &CACHE_K_AXES,
        k_cache.shape(),
        &[n, heads, ctx, dk],
    )?;
    expect_shape(
        "v_cache",
        &CACHE_V_AXES,
        v_cache.shape(),
        &[n, heads, ctx, dv],
    )?;
    RetentionShape::new(n, ctx, heads, dk, dv)?;
    let s = validate_scale(scale_q, dk)? as f32;

    let splits = ctx.div_ceil(SPLIT);
    // Per (sequence, head, split): running max m, normaliser l, then V accumulators.
    let stride = dv + 2;
    let mut partial = vec![0.0f32; n * heads * splits * stride];
    let (qd, kd, vd) = (q.data(), k_cache.data(), v_cache.data());
    partial
        .par_chunks_exact_mut(stride)
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; dk], [0.0f32; TILE]),
            |(qf, scores), (task, part)| {
                let (nh, sp) = (task / splits, task % splits);
                T::load_f32(&qd[nh * dk..(nh + 1) * dk], qf);
                scale(qf, s);
                let t0 = sp * SPLIT;
                let t1 = (t0 + SPLIT).min(ctx);
                let (ml, acc) = part.split_at_mut(2);
                let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
                acc.fill(0.0);
                for tile in (t0..t1).step_by(TILE) {
                    let len = TILE.min(t1 - tile);
                    let kr = &kd[(nh * ctx + tile) * dk..(nh * ctx + tile + len) * dk];
                    let vr = &vd[(nh * ctx + tile) * dv..(nh * ctx + tile + len) * dv];
                    let mut tile_max = f32::NEG_INFINITY;
                    for (sc, key) in scores.iter_mut().zip(kr.chunks_exact(dk)) {
                        *sc = T::dot_widen(qf, key);
                        tile_max = tile_max.max(*sc);
                    }
                    if tile_max > m {
                        let corr = (m - tile_max).exp(); // 0 on the first tile (m = −∞)
                        scale(acc, corr);
                        l *= corr;
                        m = tile_max;
                    }
                    for (&sc, val) in scores[..len].iter().zip(vr.chunks_exact(dv)) {
                        let p = (sc - m).exp();
                        l += p;
                        T::axpy_widen(acc, p, val);
                    }
                }
                ml[0] = m;
                ml[1] = l;
            },
        );
    let mut o = HostTensor::<T>::zeros(vec![n, heads, dv]);
    o.data_mut()
        .par_chunks_exact_mut(dv)
        .zip(partial.par_chunks_exact(splits * stride))
        .for_each_init(
            || vec![0.0f32; dv],
            |of, (dst, parts)| {
                let big_m = parts
                    .chunks_exact(stride)
                    .map(|p| p[0])
                    .fold(f32::NEG_INFINITY, f32::max);
                of.fill(0.0);
                let mut total = 0.0f32;
                for p in parts.chunks_exact(stride) {
                    let w = (p[0] - big_m).exp();
                    total += w * p[1];
                    axpy(of, w, &p[2..]);
                }
                scale(of, 1.0 / total);
                T::store_f32(of, dst);
            },
        );
    Ok(o)
}
