//! The batched decode step with slot-indexed f32 state (continuous batching).

use rayon::prelude::*;
use retention_core::{HostTensor, Result, RetentionError, TensorView, TensorViewMut};

use super::element::CpuElement;
use super::simd::decode_update;
use super::validate::{check_qkv_shapes, check_slots, decode_rows, expect_shape};
use crate::reference::RetentionParams;

/// One batched decode step: row n of q, k `[N, H, K]` and v `[N, H, V]` advances the f32
/// state `pool[slots[n]]` of a `[S, H, K, V]` pool in place (S ← γS + kᵀv) and yields
/// o_n = s · q_n S. Returns o `[N, H, V]` in the input dtype.
///
/// Each (row, head) reads and writes its K×V state exactly once (one fused pass); rows and
/// heads run in parallel.
///
/// # Errors
/// Shape mismatches; a slot outside the pool or repeated in one step; gammas not matching H;
/// a non-finite scale — exactly as [`crate::reference::decode_step`].
pub fn decode_step<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    pool: &mut HostTensor<f32>,
    slots: &[usize],
    params: &RetentionParams,
) -> Result<HostTensor<T>> {
    let capacity = pool.shape().first().copied().unwrap_or(0);
    let (qs, ks, vs) = (
        decode_rows(q.shape())?,
        decode_rows(k.shape())?,
        decode_rows(v.shape())?,
    );
    let dims = check_qkv_shapes(&qs, &ks, &vs, params)?;
    pool.expect_shape(
        "state pool",
        &["S", "H", "K", "V"],
        &dims.shape.state_shape(capacity),
    )?;
    decode_step_in(q, k, v, pool.data_mut(), slots, params)
}

/// [`decode_step`] on a pool held as a plain f32 slice of `S · H · K · V` elements (a state
/// pool's own storage, with no copy into a tensor). S is the slice length over H · K · V.
///
/// # Errors
/// As [`decode_step`]; a slice whose length is not a whole number of `[H, K, V]` states is a
/// shape mismatch.
pub fn decode_step_in<T: CpuElement>(
    q: &HostTensor<T>,
    k: &HostTensor<T>,
    v: &HostTensor<T>,
    pool: &mut [f32],
    slots: &[usize],
    params: &RetentionParams,
) -> Result<HostTensor<T>> {
    let mut o = HostTensor::<T>::zeros(v.shape());
    decode_step_into(
        q.view(),
        k.view(),
        v.view(),
        pool,
        slots,
        params,
        o.view_mut(),
    )?;
    Ok(o)
}

/// [`decode_step_in`] into a caller's o `[N, H, V]` (every element written): no allocation
/// but O(S + N·H) bookkeeping and per-thread rows.
///
/// # Errors
/// As [`decode_step_in`], plus an o of the wrong shape.
pub fn decode_step_into<T: CpuElement>(
    q: TensorView<'_, T>,
    k: TensorView<'_, T>,
    v: TensorView<'_, T>,
    pool: &mut [f32],
    slots: &[usize],
    params: &RetentionParams,
    mut o: TensorViewMut<'_, T>,
) -> Result<()> {
    let (qs, ks, vs) = (
        decode_rows(q.shape())?,
        decode_rows(k.shape())?,
        decode_rows(v.shape())?,
    );
    let dims = check_qkv_shapes(&qs, &ks, &vs, params)?;
    let s = dims.shape;
    let per_slot = s.heads * s.state_len();
    if !pool.len().is_multiple_of(per_slot) {
        return Err(RetentionError::ShapeMismatch {
            tensor: "state pool".into(),
            expected: format!("[S, H={}, K={}, V={}]", s.heads, s.dk, s.dv),
            got: format!("{} elements", pool.len()),
        });
    }
    let capacity = pool.len() / per_slot;
    check_slots(slots, s.batch, capacity)?;
    expect_shape("o", &["N", "H", "V"], o.shape(), v.shape())?;

    let (heads, dk, dv) = (s.heads, s.dk, s.dv);
    let state_len = dk * dv;
    // Hand each (row, head) its own state: slots are distinct, so the slabs are disjoint.
    let mut by_slot: Vec<Option<&mut [f32]>> =
        pool.chunks_exact_mut(heads * state_len).map(Some).collect();
    let mut work: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(s.batch * heads);
    for (n, &slot) in slots.iter().enumerate() {
        let slab = by_slot[slot].take().expect("slots checked distinct");
        for (h, state) in slab.chunks_exact_mut(state_len).enumerate() {
            work.push((n, h, state));
        }
    }
    let gammas: Vec<f32> = dims.log2g.iter().map(|l| l.exp2()).collect();
    let (qd, kd, vd) = (q.data(), k.data(), v.data());
    work.into_par_iter()
        .zip(o.data_mut().par_chunks_exact_mut(dv))
        .for_each_init(
            || {
                (
                    vec![0.0f32; dk],
                    vec![0.0f32; dk],
                    vec![0.0f32; dv],
                    vec![0.0f32; dv],
                )
            },
            |(qf, kf, vf, of), ((n, h, state), out)| {
                let row = n * heads + h;
                T::load_f32(&qd[row * dk..(row + 1) * dk], qf);
                T::load_f32(&kd[row * dk..(row + 1) * dk], kf);
                T::load_f32(&vd[row * dv..(row + 1) * dv], vf);
                // The scale goes on q, once.
                for x in qf.iter_mut() {
                    *x *= dims.scale;
                }
                decode_update(state, qf, kf, vf, gammas[h], of);
                T::store_f32(of, out);
            },
        );
    Ok(())
}
