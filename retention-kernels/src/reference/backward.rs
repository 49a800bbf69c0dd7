//! Backward of the recurrent and chunkwise forms: dQ, dK, dV, dH0 given dO and dH_T, each
//! derived analytically from its own form's equations so the two derivations check each other.
//!
//! Recurrent (G_t is the adjoint of S_t; S_t = γ S_{t−1} + k_tᵀ v_t, o_t = s q_t S_t):
//!
//! G_{T−1} = dH_T + s q_{T−1}ᵀ do_{T−1};  G_t = γ G_{t+1} + s q_tᵀ do_t;
//! dq_t = s do_t S_tᵀ;  dk_t = v_t G_tᵀ;  dv_t = k_t G_t;  dH0 = γ G_0.
//!
//! Chunkwise (dR_i is the adjoint of R_i, dR_last = dH_T; chunk length L; D, ξ, ζ as in the
//! forward; M = (s dO Vᵀ) ⊙ D):
//!
//! dQ = M K + s (dO ⊙ ξ) R_{i−1}ᵀ;
//! dK = Mᵀ Q + (V ⊙ ζ) dR_iᵀ;
//! dV = s (Q Kᵀ ⊙ D)ᵀ dO + (K ⊙ ζ) dR_i;
//! dR_{i−1} = γ^L dR_i + s Qᵀ (dO ⊙ ξ);  dH0 = dR_{−1}.
//!
//! Without `h0` the gradient dH0 is taken at H0 = 0; without `d_ht` the loss does not see H_T.
//!
//! d log γ (one decay per head, shared by every row and sequence, so summed over them). Every
//! γ^n in the forward contributes n·γ^n times its adjoint. Recurrent: S_t depends on γ only
//! through γ S_{t−1}, so dL/dlog γ = Σ_t γ ⟨G_t, S_{t−1}⟩ (S_{−1} = H0). Chunkwise, per chunk
//! (A = Q Kᵀ, M as above, R = R_{i−1}):
//!
//! Σ_{j≥i} (j−i) M_ji A_ji  +  Σ_j (j+1) s γ^{j+1} ⟨q_j R, do_j⟩
//! + L γ^L ⟨dR_i, R⟩  +  Σ_j (L−1−j) γ^{L−1−j} k_j dR_i v_jᵀ.
//!
//! The two derivations share no term, so their agreement (and with finite differences of
//! the forward in log γ) checks both. The recurrent one keeps every S_t (T·K·V f64): the
//! reference is for small problems.

use std::ops::Range;

use retention_core::{CuSeqlens, HostTensor, Result, RetentionError};

use super::decay::decay;
use super::problem::{Problem, RetentionParams, STATE_AXES, axpy, dot};

const VO_AXES: [&str; 4] = ["B", "T", "H", "V"];

/// Gradients of retention with respect to its inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients {
    /// dL/dq `[B, T, H, K]`.
    pub dq: HostTensor<f64>,
    /// dL/dk `[B, T, H, K]`.
    pub dk: HostTensor<f64>,
    /// dL/dv `[B, T, H, V]`.
    pub dv: HostTensor<f64>,
    /// dL/dH0 `[B, H, K, V]` (`[N, H, K, V]` for a variable-length batch).
    pub dh0: HostTensor<f64>,
    /// dL/dlog γ_h `[H]`, summed over rows (or sequences) and tokens.
    pub dlog_gamma: HostTensor<f64>,
}

/// Which derivation computes the gradient.
#[derive(Clone, Copy)]
enum Form {
    Recurrent,
    Chunkwise(usize),
}

/// One sequence: tokens `range` of batch row `row`, whose states are row `state_row` of the
/// `[rows, H, K, V]` state tensors.
struct Segment {
    row: usize,
    range: Range<usize>,
    state_row: usize,
}

/// Flat gradient buffers in the layouts of [`Gradients`].
struct GradBuffers {
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    dh0: Vec<f64>,
}

/// Offset of q/k at row `b`, token `t`, head `h` in a `[B,T,H,K]` buffer.
fn qk_offset(p: &Problem<'_>, b: usize, t: usize, h: usize) -> usize {
    let s = &p.shape;
    ((b * s.seq_len + t) * s.heads + h) * s.dk
}

/// Recurrent backward of head `h` over one segment. `h0`, `d_ht` are that head's K×V states.
/// Returns (dH0 (K×V), this segment's dL/dlog γ_h).
fn recurrent_seq_backward(
    p: &Problem<'_>,
    seg: &Segment,
    h: usize,
    h0: &[f64],
    d_o: &[f64],
    d_ht: &[f64],
    g: &mut GradBuffers,
) -> (Vec<f64>, f64) {
    let (dk, dv, b) = (p.shape.dk, p.shape.dv, seg.row);
    let gamma = decay(p.log2g[h], 1);
    // dq_t needs S_t, which only the forward sweep has; d log γ needs every S_{t−1}.
    let mut state = h0.to_vec();
    let mut previous = Vec::with_capacity(seg.range.len());
    for t in seg.range.clone() {
        previous.push(state.clone());
        let (kt, vt) = (p.k_at(b, t, h), p.v_at(b, t, h));
        for r in 0..dk {
            let row = &mut state[r * dv..(r + 1) * dv];
            for (x, vj) in row.iter_mut().zip(vt) {
                *x = gamma * *x + kt[r] * vj;
            }
        }
        let do_t = &d_o[p.o_offset(b, t, h)..][..dv];
        let qo = qk_offset(p, b, t, h);
        for r in 0..dk {
            g.dq[qo + r] = p.scale * dot(&state[r * dv..(r + 1) * dv], do_t);
        }
    }
    // Reverse sweep: `adj` is G_t once token t's output term is added.
    let mut adj = d_ht.to_vec();
    let mut dlog_gamma = 0.0;
    for (t, s_prev) in seg.range.clone().zip(&previous).rev() {
        let (qt, kt, vt) = (p.q_at(b, t, h), p.k_at(b, t, h), p.v_at(b, t, h));
        let vo = p.o_offset(b, t, h);
        let do_t = &d_o[vo..vo + dv];
        for r in 0..dk {
            axpy(&mut adj[r * dv..(r + 1) * dv], p.scale * qt[r], do_t);
        }
        let qo = qk_offset(p, b, t, h);
        for r in 0..dk {
            let adj_row = &adj[r * dv..(r + 1) * dv];
            g.dk[qo + r] = dot(adj_row, vt);
            axpy(&mut g.dv[vo..vo + dv], kt[r], adj_row);
        }
        dlog_gamma += gamma * dot(&adj, s_prev);
        for x in &mut adj {
            *x *= gamma;
        }
    }
    (adj, dlog_gamma)
}

/// Chunkwise backward of head `h` over one segment with chunk `c`. Returns (dH0 (K×V), this
/// segment's dL/dlog γ_h).
fn chunkwise_seq_backward(
    p: &Problem<'_>,
    seg: &Segment,
    h: usize,
    c: usize,
    h0: &[f64],
    d_o: &[f64],
    d_ht: &[f64],
    g: &mut GradBuffers,
) -> (Vec<f64>, f64) {
    let (dk, dv, b, lg, s) = (p.shape.dk, p.shape.dv, seg.row, p.log2g[h], p.scale);
    let chunks: Vec<Range<usize>> = seg
        .range
        .clone()
        .step_by(c)
        .map(|start| start..(start + c).min(seg.range.end))
        .collect();
    // R_{i−1} entering every chunk, from the forward state recurrence.
    let mut entering = Vec::with_capacity(chunks.len());
    let mut state = h0.to_vec();
    for chunk in &chunks {
        entering.push(state.clone());
        let len = chunk.len();
        let g_len = decay(lg, len);
        for x in &mut state {
            *x *= g_len;
        }
        for (j, t) in chunk.clone().enumerate() {
            let zeta = decay(lg, len - 1 - j);
            let (kj, vj) = (p.k_at(b, t, h), p.v_at(b, t, h));
            for r in 0..dk {
                axpy(&mut state[r * dv..(r + 1) * dv], kj[r] * zeta, vj);
            }
        }
    }
    // `adj` is dR_i of the chunk being processed, then dR_{i−1}.
    let mut adj = d_ht.to_vec();
    let mut dlog_gamma = 0.0;
    for (chunk, r_prev) in chunks.iter().zip(&entering).rev() {
        let (start, len) = (chunk.start, chunk.len());
        // Intra-chunk terms through M = (s dO Vᵀ) ⊙ D and s (Q Kᵀ ⊙ D)ᵀ dO; inter-chunk dQ.
        for j in 0..len {
            let (qj, qoj) = (p.q_at(b, start + j, h), qk_offset(p, b, start + j, h));
            let do_j = &d_o[p.o_offset(b, start + j, h)..][..dv];
            for i in 0..=j {
                let (ki, vi) = (p.k_at(b, start + i, h), p.v_at(b, start + i, h));
                let (qoi, voi) = (qk_offset(p, b, start + i, h), p.o_offset(b, start + i, h));
                let d = decay(lg, j - i);
                let m = s * dot(do_j, vi) * d;
                dlog_gamma += (j - i) as f64 * m * dot(qj, ki);
                axpy(&mut g.dq[qoj..qoj + dk], m, ki);
                axpy(&mut g.dk[qoi..qoi + dk], m, qj);
                axpy(&mut g.dv[voi..voi + dv], s * dot(qj, ki) * d, do_j);
            }
            let xi = decay(lg, j + 1);
            for r in 0..dk {
                let inter = s * xi * dot(&r_prev[r * dv..(r + 1) * dv], do_j);
                g.dq[qoj + r] += inter;
                dlog_gamma += (j + 1) as f64 * qj[r] * inter;
            }
        }
        // State terms: dK += (V ⊙ ζ) dR_iᵀ; dV += (K ⊙ ζ) dR_i.
        for i in 0..len {
            let zeta = decay(lg, len - 1 - i);
            let (ki, vi) = (p.k_at(b, start + i, h), p.v_at(b, start + i, h));
            let (qoi, voi) = (qk_offset(p, b, start + i, h), p.o_offset(b, start + i, h));
            for r in 0..dk {
                let adj_row = &adj[r * dv..(r + 1) * dv];
                let state_term = zeta * dot(adj_row, vi);
                g.dk[qoi + r] += state_term;
                dlog_gamma += (len - 1 - i) as f64 * ki[r] * state_term;
                axpy(&mut g.dv[voi..voi + dv], zeta * ki[r], adj_row);
            }
        }
        // dR_{i−1} = γ^L dR_i + s Qᵀ (dO ⊙ ξ).
        let g_len = decay(lg, len);
        dlog_gamma += len as f64 * g_len * dot(&adj, r_prev);
        for x in &mut adj {
            *x *= g_len;
        }
        for j in 0..len {
            let xi = decay(lg, j + 1);
            let qj = p.q_at(b, start + j, h);
            let do_j = &d_o[p.o_offset(b, start + j, h)..][..dv];
            for r in 0..dk {
                axpy(&mut adj[r * dv..(r + 1) * dv], s * xi * qj[r], do_j);
            }
        }
    }
    (adj, dlog_gamma)
}

/// Validate the state and upstream tensors against `rows` sequences, then run `form` over
/// every segment and head.
fn run_backward(
    p: &Problem<'_>,
    segments: &[Segment],
    rows: usize,
    form: Form,
    h0: Option<&HostTensor<f64>>,
    d_o: &HostTensor<f64>,
    d_ht: Option<&HostTensor<f64>>,
) -> Result<Gradients> {
    let s = p.shape;
    p.check_state(h0, rows)?;
    d_o.expect_shape("d_o", &VO_AXES, &s.vo_shape())?;
    if let Some(d) = d_ht {
        d.expect_shape("d_ht", &STATE_AXES, &s.state_shape(rows))?;
    }
    let kv = s.state_len();
    let zeros = vec![0.0; kv];
    let mut g = GradBuffers {
        dq: vec![0.0; p.q.len()],
        dk: vec![0.0; p.k.len()],
        dv: vec![0.0; p.v.len()],
        dh0: vec![0.0; rows * s.heads * kv],
    };
    let mut dlog_gamma = vec![0.0; s.heads];
    for seg in segments {
        for h in 0..s.heads {
            let so = p.state_offset(seg.state_row, h);
            let head_state = |t: Option<&HostTensor<f64>>| match t {
                Some(t) => t.data()[so..so + kv].to_vec(),
                None => zeros.clone(),
            };
            let (h0_head, d_ht_head) = (head_state(h0), head_state(d_ht));
            let (dh0, dlg) = match form {
                Form::Recurrent => {
                    recurrent_seq_backward(p, seg, h, &h0_head, d_o.data(), &d_ht_head, &mut g)
                }
                Form::Chunkwise(c) => {
                    chunkwise_seq_backward(p, seg, h, c, &h0_head, d_o.data(), &d_ht_head, &mut g)
                }
            };
            g.dh0[so..so + kv].copy_from_slice(&dh0);
            dlog_gamma[h] += dlg;
        }
    }
    Ok(Gradients {
        dq: HostTensor::new(s.qk_shape(), g.dq)?,
        dk: HostTensor::new(s.qk_shape(), g.dk)?,
        dv: HostTensor::new(s.vo_shape(), g.dv)?,
        dh0: HostTensor::new(s.state_shape(rows), g.dh0)?,
        dlog_gamma: HostTensor::new(vec![s.heads], dlog_gamma)?,
    })
}

/// One segment per batch row, covering all its tokens.
fn whole_rows(p: &Problem<'_>) -> Vec<Segment> {
    (0..p.shape.batch)
        .map(|b| Segment {
            row: b,
            range: 0..p.shape.seq_len,
            state_row: b,
        })
        .collect()
}

/// One segment per packed sequence, after checking the packing as the forward does.
fn packed_seqs(p: &Problem<'_>, cu_seqlens: &CuSeqlens) -> Result<Vec<Segment>> {
    p.check_packed(cu_seqlens)?;
    Ok((0..cu_seqlens.num_seqs())
        .map(|n| Segment {
            row: 0,
            range: cu_seqlens.range(n),
            state_row: n,
        })
        .collect())
}

/// Gradients of the recurrent form ([`super::recurrent`]) for upstream gradients `d_o`
/// `[B, T, H, V]` and optional `d_ht` `[B, H, K, V]`, token by token.
///
/// # Errors
/// As [`super::recurrent`], plus shape mismatches of `d_o` and `d_ht`.
pub fn recurrent_backward(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
    h0: Option<&HostTensor<f64>>,
    d_o: &HostTensor<f64>,
    d_ht: Option<&HostTensor<f64>>,
) -> Result<Gradients> {
    let p = Problem::new(q, k, v, params)?;
    let rows = p.shape.batch;
    run_backward(&p, &whole_rows(&p), rows, Form::Recurrent, h0, d_o, d_ht)
}

/// Gradients of the chunkwise form ([`super::chunkwise`]) with chunk `chunk`, chunk by chunk.
/// Equal to [`recurrent_backward`] up to rounding for every chunk size.
///
/// # Errors
/// As [`super::chunkwise`], plus shape mismatches of `d_o` and `d_ht`.
pub fn chunkwise_backward(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f64>>,
    d_o: &HostTensor<f64>,
    d_ht: Option<&HostTensor<f64>>,
) -> Result<Gradients> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let p = Problem::new(q, k, v, params)?;
    let rows = p.shape.batch;
    let form = Form::Chunkwise(chunk);
    run_backward(&p, &whole_rows(&p), rows, form, h0, d_o, d_ht)
}

/// Gradients of [`super::recurrent_varlen`]: packed inputs, `h0` / `d_ht` / dH0 `[N, H, K, V]`.
///
/// # Errors
/// As [`super::recurrent_varlen`], plus shape mismatches of `d_o` and `d_ht`.
pub fn recurrent_backward_varlen(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    h0: Option<&HostTensor<f64>>,
    d_o: &HostTensor<f64>,
    d_ht: Option<&HostTensor<f64>>,
) -> Result<Gradients> {
    let p = Problem::new(q, k, v, params)?;
    let segments = packed_seqs(&p, cu_seqlens)?;
    let rows = cu_seqlens.num_seqs();
    run_backward(&p, &segments, rows, Form::Recurrent, h0, d_o, d_ht)
}

/// Gradients of [`super::chunkwise_varlen`]; chunks restart at every sequence boundary.
///
/// # Errors
/// As [`super::chunkwise_varlen`], plus shape mismatches of `d_o` and `d_ht`.
pub fn chunkwise_backward_varlen(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    cu_seqlens: &CuSeqlens,
    params: &RetentionParams,
    chunk: usize,
    h0: Option<&HostTensor<f64>>,
    d_o: &HostTensor<f64>,
    d_ht: Option<&HostTensor<f64>>,
) -> Result<Gradients> {
    if chunk == 0 {
        return Err(RetentionError::ZeroChunk);
    }
    let p = Problem::new(q, k, v, params)?;
    let segments = packed_seqs(&p, cu_seqlens)?;
    let rows = cu_seqlens.num_seqs();
    run_backward(&p, &segments, rows, Form::Chunkwise(chunk), h0, d_o, d_ht)
}
