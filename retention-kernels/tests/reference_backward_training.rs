//! The training additions of the f64 reference backward: d log γ (recurrent and chunkwise
//! derivations against each other and against central finite differences of the forward in
//! log γ), the parallel backward and the gated-epilogue backward against finite differences,
//! varlen sums, sharded heads and a sequence split in two.
//!
//! Loss: L = Σ o ⊙ W_o + Σ H_T ⊙ W_h (dO = W_o, dH_T = W_h). Retention is not linear in log γ,
//! so its central differences carry an O(ε²) truncation term: ε = 1e-4 keeps it near 1e-8
//! relative, under the 1e-6 tolerance.

mod common;

use common::{concat_t, slice_t, state};
use retention_core::{CuSeqlens, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{
    RetentionParams, chunkwise, chunkwise_backward, chunkwise_backward_varlen, chunkwise_varlen,
    max_rel_diff, msr_epilogue, msr_epilogue_backward, parallel, parallel_backward, recurrent,
    recurrent_backward, recurrent_backward_varlen,
};

/// Finite-difference step in log γ and in the inputs.
const EPS: f64 = 1e-4;
/// Analytic vs finite differences, max relative.
const FD_TOL: f64 = 1e-6;
/// Two analytic derivations of the same gradient, max relative.
const SAME_TOL: f64 = 1e-10;

fn random(seed: u64, shape: &[usize]) -> HostTensor<f64> {
    let mut rng = SplitMix64::new(seed);
    HostTensor::new(shape.to_vec(), rng.vec(shape.iter().product())).unwrap()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn with_gammas(g: &[f64], scale: Option<f64>) -> RetentionParams {
    RetentionParams::new(Gammas::from_list(g.to_vec()).unwrap(), scale)
}

/// Central differences of `loss` in log γ_h for every head.
fn fd_log_gamma(gammas: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..gammas.len())
        .map(|h| {
            let mut g = gammas.to_vec();
            g[h] = gammas[h] * EPS.exp();
            let up = loss(&g);
            g[h] = gammas[h] * (-EPS).exp();
            let down = loss(&g);
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

fn assert_rel(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert!(
        want.iter().any(|x| *x != 0.0),
        "{what}: zero reference proves nothing"
    );
    let e = max_rel_diff(got, want);
    assert!(e <= tol, "{what}: max rel diff {e:e} > {tol:e}");
}

/// (B, T, H, K, V) problem with h0 / d_ht optional.
struct Case {
    q: HostTensor<f64>,
    k: HostTensor<f64>,
    v: HostTensor<f64>,
    h0: Option<HostTensor<f64>>,
    d_o: HostTensor<f64>,
    d_ht: Option<HostTensor<f64>>,
}

impl Case {
    fn new(
        seed: u64,
        (b, t, h, k, v): (usize, usize, usize, usize, usize),
        h0: bool,
        dht: bool,
    ) -> Self {
        Self {
            q: random(seed, &[b, t, h, k]),
            k: random(seed + 1, &[b, t, h, k]),
            v: random(seed + 2, &[b, t, h, v]),
            h0: h0.then(|| random(seed + 3, &[b, h, k, v])),
            d_o: random(seed + 4, &[b, t, h, v]),
            d_ht: dht.then(|| random(seed + 5, &[b, h, k, v])),
        }
    }

    fn loss(&self, o: &HostTensor<f64>, ht: &HostTensor<f64>) -> f64 {
        dot(o.data(), self.d_o.data())
            + self.d_ht.as_ref().map_or(0.0, |w| dot(ht.data(), w.data()))
    }
}

#[test]
fn dlog_gamma_matches_finite_differences_and_both_derivations_agree() {
    let gammas = [0.6, 0.93, 0.999];
    for (h0, dht) in [(true, true), (false, false), (true, false), (false, true)] {
        let case = Case::new(10, (2, 9, 3, 3, 4), h0, dht);
        for scale in [None, Some(0.37)] {
            let p = with_gammas(&gammas, scale);
            let fd = fd_log_gamma(&gammas, |g| {
                let (o, ht) = recurrent(
                    &case.q,
                    &case.k,
                    &case.v,
                    &with_gammas(g, scale),
                    case.h0.as_ref(),
                )
                .unwrap();
                case.loss(&o, &ht)
            });
            let rec = recurrent_backward(
                &case.q,
                &case.k,
                &case.v,
                &p,
                case.h0.as_ref(),
                &case.d_o,
                case.d_ht.as_ref(),
            )
            .unwrap();
            let what = format!("h0 {h0} dht {dht} scale {scale:?}");
            assert_eq!(rec.dlog_gamma.shape(), &[3]);
            assert_rel(
                &format!("recurrent {what}"),
                rec.dlog_gamma.data(),
                &fd,
                FD_TOL,
            );
            for c in [1usize, 2, 4, 9, 20] {
                let ch = chunkwise_backward(
                    &case.q,
                    &case.k,
                    &case.v,
                    &p,
                    c,
                    case.h0.as_ref(),
                    &case.d_o,
                    case.d_ht.as_ref(),
                )
                .unwrap();
                let w = format!("chunk {c} {what}");
                assert_rel(&w, ch.dlog_gamma.data(), &fd, FD_TOL);
                assert_rel(&w, ch.dlog_gamma.data(), rec.dlog_gamma.data(), SAME_TOL);
            }
        }
    }
}

#[test]
fn dlog_gamma_of_sharded_retnet_heads_matches_finite_differences() {
    // Global heads 5 and 6: γ = 1 − 2^−10, 1 − 2^−11 (a shard of a wider model).
    let p = RetentionParams::new(Gammas::retnet_sharded(2, 5).unwrap(), Some(0.8));
    let gammas = p.gammas.as_slice().to_vec();
    assert_eq!(gammas[0], 1.0 - (-10.0f64).exp2());
    let case = Case::new(20, (1, 12, 2, 2, 3), true, true);
    let fd = fd_log_gamma(&gammas, |g| {
        let (o, ht) = chunkwise(
            &case.q,
            &case.k,
            &case.v,
            &with_gammas(g, Some(0.8)),
            5,
            case.h0.as_ref(),
        )
        .unwrap();
        case.loss(&o, &ht)
    });
    let got = chunkwise_backward(
        &case.q,
        &case.k,
        &case.v,
        &p,
        5,
        case.h0.as_ref(),
        &case.d_o,
        case.d_ht.as_ref(),
    )
    .unwrap();
    assert_rel("sharded", got.dlog_gamma.data(), &fd, FD_TOL);
}

#[test]
fn varlen_dlog_gamma_is_the_sum_over_sequences_and_matches_finite_differences() {
    let gammas = [0.7, 0.97];
    let cu = CuSeqlens::new(vec![0, 5, 6, 14], 14).unwrap();
    let case = Case::new(30, (1, 14, 2, 3, 2), false, false);
    let h0 = state(31, 3, 2, 3, 2);
    let d_ht = state(32, 3, 2, 3, 2);
    let p = with_gammas(&gammas, Some(1.3));
    let loss = |g: &[f64]| {
        let (o, ht) = chunkwise_varlen(
            &case.q,
            &case.k,
            &case.v,
            &cu,
            &with_gammas(g, Some(1.3)),
            4,
            Some(&h0),
        )
        .unwrap();
        dot(o.data(), case.d_o.data()) + dot(ht.data(), d_ht.data())
    };
    let fd = fd_log_gamma(&gammas, loss);
    let ch = chunkwise_backward_varlen(
        &case.q,
        &case.k,
        &case.v,
        &cu,
        &p,
        4,
        Some(&h0),
        &case.d_o,
        Some(&d_ht),
    )
    .unwrap();
    let rec = recurrent_backward_varlen(
        &case.q,
        &case.k,
        &case.v,
        &cu,
        &p,
        Some(&h0),
        &case.d_o,
        Some(&d_ht),
    )
    .unwrap();
    assert_rel("varlen chunkwise", ch.dlog_gamma.data(), &fd, FD_TOL);
    assert_rel(
        "varlen recurrent",
        rec.dlog_gamma.data(),
        ch.dlog_gamma.data(),
        SAME_TOL,
    );
    // Σ over sequences of each sequence's own backward.
    let mut sum = [0.0; 2];
    for n in 0..3 {
        let r = cu.range(n);
        let one = |x: &HostTensor<f64>| slice_t(x, r.clone());
        let row = |x: &HostTensor<f64>| {
            let kv = 3 * 2 * 2;
            HostTensor::new(vec![1, 2, 3, 2], x.data()[n * kv..(n + 1) * kv].to_vec()).unwrap()
        };
        let g = chunkwise_backward(
            &one(&case.q),
            &one(&case.k),
            &one(&case.v),
            &p,
            4,
            Some(&row(&h0)),
            &one(&case.d_o),
            Some(&row(&d_ht)),
        )
        .unwrap();
        for (s, x) in sum.iter_mut().zip(g.dlog_gamma.data()) {
            *s += x;
        }
    }
    assert_rel("varlen sum", ch.dlog_gamma.data(), &sum, SAME_TOL);
}

#[test]
fn a_sequence_split_in_two_gives_the_gradients_of_one_call() {
    let gammas = [0.8, 0.99];
    let p = with_gammas(&gammas, None);
    let case = Case::new(40, (2, 13, 2, 3, 4), true, true);
    let whole = chunkwise_backward(
        &case.q,
        &case.k,
        &case.v,
        &p,
        4,
        case.h0.as_ref(),
        &case.d_o,
        case.d_ht.as_ref(),
    )
    .unwrap();
    let (a, b) = (0..6, 6..13);
    let part = |x: &HostTensor<f64>, r: &std::ops::Range<usize>| slice_t(x, r.clone());
    let (_, h_mid) = chunkwise(
        &part(&case.q, &a),
        &part(&case.k, &a),
        &part(&case.v, &a),
        &p,
        4,
        case.h0.as_ref(),
    )
    .unwrap();
    let second = chunkwise_backward(
        &part(&case.q, &b),
        &part(&case.k, &b),
        &part(&case.v, &b),
        &p,
        4,
        Some(&h_mid),
        &part(&case.d_o, &b),
        case.d_ht.as_ref(),
    )
    .unwrap();
    let first = chunkwise_backward(
        &part(&case.q, &a),
        &part(&case.k, &a),
        &part(&case.v, &a),
        &p,
        4,
        case.h0.as_ref(),
        &part(&case.d_o, &a),
        Some(&second.dh0),
    )
    .unwrap();
    let cat = |x: &HostTensor<f64>, y: &HostTensor<f64>| concat_t(x, y);
    assert_rel(
        "dq",
        cat(&first.dq, &second.dq).data(),
        whole.dq.data(),
        SAME_TOL,
    );
    assert_rel(
        "dk",
        cat(&first.dk, &second.dk).data(),
        whole.dk.data(),
        SAME_TOL,
    );
    assert_rel(
        "dv",
        cat(&first.dv, &second.dv).data(),
        whole.dv.data(),
        SAME_TOL,
    );
    assert_rel("dh0", first.dh0.data(), whole.dh0.data(), SAME_TOL);
    let summed: Vec<f64> = first
        .dlog_gamma
        .data()
        .iter()
        .zip(second.dlog_gamma.data())
        .map(|(x, y)| x + y)
        .collect();
    assert_rel("dlog_gamma", &summed, whole.dlog_gamma.data(), SAME_TOL);
}

/// Central differences of `loss` in every element of `x`.
fn fd_inputs(x: &HostTensor<f64>, loss: impl Fn(&HostTensor<f64>) -> f64) -> Vec<f64> {
    let mut y = x.clone();
    (0..x.len())
        .map(|e| {
            let v = x.data()[e];
            y.data_mut()[e] = v + EPS;
            let up = loss(&y);
            y.data_mut()[e] = v - EPS;
            let down = loss(&y);
            y.data_mut()[e] = v;
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

#[test]
fn parallel_backward_matches_finite_differences_and_the_chunkwise_backward() {
    let gammas = [0.5, 0.9, 0.995];
    let case = Case::new(50, (2, 8, 3, 3, 2), false, false);
    for scale in [None, Some(2.5)] {
        let p = with_gammas(&gammas, scale);
        let g = parallel_backward(&case.q, &case.k, &case.v, &p, &case.d_o).unwrap();
        let loss =
            |q: &HostTensor<f64>, k: &HostTensor<f64>, v: &HostTensor<f64>, p: &RetentionParams| {
                dot(parallel(q, k, v, p).unwrap().data(), case.d_o.data())
            };
        let w = format!("scale {scale:?}");
        assert_rel(
            &format!("dq {w}"),
            g.dq.data(),
            &fd_inputs(&case.q, |x| loss(x, &case.k, &case.v, &p)),
            FD_TOL,
        );
        assert_rel(
            &format!("dk {w}"),
            g.dk.data(),
            &fd_inputs(&case.k, |x| loss(&case.q, x, &case.v, &p)),
            FD_TOL,
        );
        assert_rel(
            &format!("dv {w}"),
            g.dv.data(),
            &fd_inputs(&case.v, |x| loss(&case.q, &case.k, x, &p)),
            FD_TOL,
        );
        let fd_g = fd_log_gamma(&gammas, |gs| {
            loss(&case.q, &case.k, &case.v, &with_gammas(gs, scale))
        });
        assert_rel(
            &format!("dlog_gamma {w}"),
            g.dlog_gamma.data(),
            &fd_g,
            FD_TOL,
        );
        let ch =
            chunkwise_backward(&case.q, &case.k, &case.v, &p, 3, None, &case.d_o, None).unwrap();
        assert_rel("dq vs chunkwise", g.dq.data(), ch.dq.data(), SAME_TOL);
        assert_rel("dk vs chunkwise", g.dk.data(), ch.dk.data(), SAME_TOL);
        assert_rel("dv vs chunkwise", g.dv.data(), ch.dv.data(), SAME_TOL);
        assert_rel(
            "dlog_gamma vs chunkwise",
            g.dlog_gamma.data(),
            ch.dlog_gamma.data(),
            SAME_TOL,
        );
    }
}

#[test]
fn epilogue_backward_matches_finite_differences() {
    let shape = [2, 3, 2, 5];
    let o = random(60, &shape);
    let g = random(61, &shape);
    let dy = random(62, &shape);
    for eps in [0.0, 1e-6, 0.3] {
        let grads = msr_epilogue_backward(&o, &g, eps, &dy).unwrap();
        let loss = |o: &HostTensor<f64>, g: &HostTensor<f64>| {
            dot(msr_epilogue(o, g, eps).unwrap().data(), dy.data())
        };
        assert_rel(
            &format!("do eps {eps}"),
            grads.d_o.data(),
            &fd_inputs(&o, |x| loss(x, &g)),
            FD_TOL,
        );
        assert_rel(
            &format!("dg eps {eps}"),
            grads.dg.data(),
            &fd_inputs(&g, |x| loss(&o, x)),
            FD_TOL,
        );
    }
}

#[test]
fn epilogue_backward_of_an_all_zero_row_with_zero_eps_is_zero_and_bad_dy_is_an_error() {
    let o = HostTensor::zeros(vec![1, 1, 1, 4]);
    let g = random(70, &[1, 1, 1, 4]);
    let dy = random(71, &[1, 1, 1, 4]);
    let grads = msr_epilogue_backward(&o, &g, 0.0, &dy).unwrap();
    assert!(
        grads
            .d_o
            .data()
            .iter()
            .chain(grads.dg.data())
            .all(|x| *x == 0.0)
    );
    let bad = random(72, &[1, 1, 1, 3]);
    assert!(matches!(
        msr_epilogue_backward(&o, &g, 0.0, &bad),
        Err(retention_core::RetentionError::ShapeMismatch { .. })
    ));
}
