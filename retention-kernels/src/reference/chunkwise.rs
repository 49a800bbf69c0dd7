//! Chunkwise recurrent form (chunk C; the last chunk may be shorter, length L):
//!
//! R_i = γ^L R_{i−1} + K_[i]ᵀ (V_[i] ⊙ ζ), ζ_j = γ^(L−1−j);
//! O_[i] = s·((Q_[i] K_[i]ᵀ ⊙ D) V_[i] + (Q_[i] R_{i−1}) ⊙ ξ), ξ_j = γ^(j+1).

use retention_core::{HostTensor, Result, RetentionError};

use super::decay::decay;
use super::problem::{Problem, RetentionParams, axpy, dot};

/// Run the chunkwise form for head `h` over tokens `range` of row `b` with chunk `c`,
/// carrying `state` (R, K×V row-major) in place and writing o into `out` (`[B,T,H,V]`).
pub(crate) fn chunkwise_seq(
    p: &Problem<'_>,
    b: usize,
    range: std::ops::Range<usize>,
    h: usize,
    c: usize,
    state: &mut [f64],
    out: &mut [f64],
) {
    let (dk, dv) = (p.shape.dk, p.shape.dv);
    let lg = p.log2g[h];
    let mut start = range.start;
    while start < range.end {
        let len = c.min(range.end - start);
        // Outputs: intra-chunk (Q Kᵀ ⊙ D) V plus inter-chunk (Q R_{i−1}) ⊙ ξ.
        for j in 0..len {
            let qj = p.q_at(b, start + j, h);
            let off = p.o_offset(b, start + j, h);
            let oj = &mut out[off..off + dv];
            oj.fill(0.0);
            for i in 0..=j {
                let w = dot(qj, p.k_at(b, start + i, h)) * decay(lg, j - i);
                axpy(oj, w, p.v_at(b, start + i, h));
            }
            let xi = decay(lg, j + 1);
            for (col, o) in oj.iter_mut().enumerate() {
                let qr: f64 = (0..dk).map(|r| qj[r] * state[r * dv + col]).sum();
                *o = p.scale * (*o + qr * xi);
            }
        }
        // State: R_i = γ^L R_{i−1} + K_[i]ᵀ (V_[i] ⊙ ζ).
        let g_len = decay(lg, len);
        for x in state.iter_mut() {
            *x *= g_len;
        }
        for j in 0..len {
            let zeta = decay(lg, len - 1 - j);
            let (kj, vj) = (p.k_at(b, start + j, h), p.v_at(b, start + j, h));
            for r in 0..dk {
                axpy(&mut state[r * dv..(r + 1) * dv], kj[r] * zeta, vj);
            }
        }
        start += len;
    }
}

/// Chunkwise retention with chunk size `chunk` (any C ≥ 1; C need not divide T; C > T is
/// one partial chunk). `h0` is `[B, H, K, V]`. Returns (o `[B, T, H, V]`, H_T `[B, H, K, V]`).
///
/// # Errors
/// [`RetentionError::ZeroChunk`]; shape mismatches; gammas not matching H; bad scale.
pub fn chunkwise(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f64>>,
) -> Result<(HostTensor<f64>, HostTensor<f64>)> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
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
            chunkwise_seq(&p, b, 0..s.seq_len, h, chunk, state, o.data_mut());
        }
    }
    Ok((o, ht))
}
