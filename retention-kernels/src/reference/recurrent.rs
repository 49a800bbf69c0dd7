//! Recurrent form: S_t = γ S_{t−1} + k_tᵀ v_t; o_t = s · q_t S_t, with S_{−1} = H0.

use retention_core::{HostTensor, Result};

use super::problem::{Problem, RetentionParams, dot};
use crate::validate::{check_slots, decode_rows};

/// Run the recurrence for head `h` over tokens `range` of row `b`, updating `state` (K·V,
/// row-major K×V) in place and writing o into `out` (a `[B,T,H,V]` buffer).
pub(crate) fn recurrent_seq(
    p: &Problem<'_>,
    b: usize,
    range: std::ops::Range<usize>,
    h: usize,
    state: &mut [f64],
    out: &mut [f64],
) {
    let (dk, dv) = (p.shape.dk, p.shape.dv);
    let g = p.log2g[h].exp2();
    for t in range {
        let (qt, kt, vt) = (p.q_at(b, t, h), p.k_at(b, t, h), p.v_at(b, t, h));
        for i in 0..dk {
            let row = &mut state[i * dv..(i + 1) * dv];
            for (sij, vj) in row.iter_mut().zip(vt) {
                *sij = g * *sij + kt[i] * vj;
            }
        }
        let off = p.o_offset(b, t, h);
        for j in 0..dv {
            let col: Vec<f64> = (0..dk).map(|i| state[i * dv + j]).collect();
            out[off + j] = p.scale * dot(qt, &col);
        }
    }
}

/// Recurrent retention over whole sequences. `h0` is `[B, H, K, V]` (zeros when `None`).
/// Returns (o `[B, T, H, V]`, H_T `[B, H, K, V]`).
///
/// # Errors
/// Shape mismatches (q, k, v, h0); gammas not matching H; a non-finite scale.
pub fn recurrent(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
    h0: Option<&HostTensor<f64>>,
) -> Result<(HostTensor<f64>, HostTensor<f64>)> {
    let p = Problem::new(q, k, v, params)?;
    let s = p.shape;
    p.check_state(h0, s.batch)?;
    let mut o = HostTensor::zeros(s.vo_shape());
    let mut ht = h0
        .cloned()
        .unwrap_or_else(|| HostTensor::zeros(s.state_shape(s.batch)));
    for b in 0..s.batch {
        for h in 0..s.heads {
            let so = p.state_offset(b, h);
            let state = &mut ht.data_mut()[so..so + s.state_len()];
            recurrent_seq(&p, b, 0..s.seq_len, h, state, o.data_mut());
        }
    }
    Ok((o, ht))
}

/// One batched decode step with slot-indexed state (continuous batching): row n of q, k
/// `[N, H, K]` and v `[N, H, V]` advances the state `pool[slots[n]]` of a `[S, H, K, V]` pool
/// in place (S ← γS + kᵀv) and yields o_n = s · q_n S. Returns o `[N, H, V]`.
///
/// # Errors
/// Shape mismatches; a slot index outside the pool; the same slot twice in one step (two
/// rows would update one state); gammas not matching H; a non-finite scale.
pub fn decode_step(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    pool: &mut HostTensor<f64>,
    slots: &[usize],
    params: &RetentionParams,
) -> Result<HostTensor<f64>> {
    let as_seq = |t: &HostTensor<f64>| -> Result<HostTensor<f64>> {
        HostTensor::new(decode_rows(t.shape())?.to_vec(), t.data().to_vec())
    };
    let (q4, k4, v4) = (as_seq(q)?, as_seq(k)?, as_seq(v)?);
    let p = Problem::new(&q4, &k4, &v4, params)?;
    let s = p.shape;
    let capacity = pool.shape().first().copied().unwrap_or(0);
    pool.expect_shape(
        "state pool",
        &["S", "H", "K", "V"],
        &s.state_shape(capacity),
    )?;
    check_slots(slots, s.batch, capacity)?;
    let mut o = HostTensor::zeros(vec![s.batch, s.heads, s.dv]);
    for (n, &slot) in slots.iter().enumerate() {
        for h in 0..s.heads {
            let so = p.state_offset(slot, h);
            let state = &mut pool.data_mut()[so..so + s.state_len()];
            recurrent_seq(&p, n, 0..1, h, state, o.data_mut());
        }
    }
    Ok(o)
}
