//! The analytic backward of the f64 reference against central finite differences of the
//! forward, and its recurrent and chunkwise derivations against each other.
//!
//! The loss is L = Σ (o ⊙ W_o) + Σ (H_T ⊙ W_h), so dO = W_o and dH_T = W_h. Every input
//! element enters o and H_T linearly (retention is multilinear in q, k, v, H0), so a central
//! difference is exact up to rounding and any wrong term in a gradient shows up in full.

use proptest::prelude::*;
use retention_core::{CuSeqlens, Gammas, HostTensor, RetentionError, SplitMix64};
use retention_kernels::reference::{
    Gradients, RetentionParams, chunkwise, chunkwise_backward, chunkwise_backward_varlen,
    max_rel_diff, recurrent, recurrent_backward, recurrent_backward_varlen,
};

/// (B, T, H, K, V).
type Dims = (usize, usize, usize, usize, usize);

#[derive(Clone, Copy, Debug)]
enum Form {
    Recurrent,
    Chunkwise(usize),
}

/// Inputs and loss weights of one seeded problem.
struct Case {
    q: HostTensor<f64>,
    k: HostTensor<f64>,
    v: HostTensor<f64>,
    h0: Option<HostTensor<f64>>,
    d_o: HostTensor<f64>,
    d_ht: Option<HostTensor<f64>>,
    params: RetentionParams,
}

fn random(rng: &mut SplitMix64, shape: [usize; 4]) -> HostTensor<f64> {
    HostTensor::new(shape.to_vec(), rng.vec(shape.iter().product())).unwrap()
}

impl Case {
    fn new(
        seed: u64,
        (b, t, h, k, v): Dims,
        params: RetentionParams,
        h0: bool,
        d_ht: bool,
    ) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            q: random(&mut rng, [b, t, h, k]),
            k: random(&mut rng, [b, t, h, k]),
            v: random(&mut rng, [b, t, h, v]),
            h0: h0.then(|| random(&mut rng, [b, h, k, v])),
            d_o: random(&mut rng, [b, t, h, v]),
            d_ht: d_ht.then(|| random(&mut rng, [b, h, k, v])),
            params,
        }
    }

    fn backward(&self, form: Form) -> Gradients {
        let (h0, d_ht) = (self.h0.as_ref(), self.d_ht.as_ref());
        match form {
            Form::Recurrent => {
                recurrent_backward(&self.q, &self.k, &self.v, &self.params, h0, &self.d_o, d_ht)
            }
            Form::Chunkwise(c) => chunkwise_backward(
                &self.q,
                &self.k,
                &self.v,
                &self.params,
                c,
                h0,
                &self.d_o,
                d_ht,
            ),
        }
        .unwrap()
    }

    /// L at the given inputs (h0 always explicit: zeros stand for "no initial state").
    fn loss(&self, form: Form, inputs: &[HostTensor<f64>; 4]) -> f64 {
        let [q, k, v, h0] = inputs;
        let (o, ht) = match form {
            Form::Recurrent => recurrent(q, k, v, &self.params, Some(h0)),
            Form::Chunkwise(c) => chunkwise(q, k, v, &self.params, c, Some(h0)),
        }
        .unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let state_term = self.d_ht.as_ref().map_or(0.0, |w| dot(ht.data(), w.data()));
        dot(o.data(), self.d_o.data()) + state_term
    }

    /// Central differences of L with respect to every element of q, k, v and H0.
    fn finite_differences(&self, form: Form) -> [Vec<f64>; 4] {
        const EPS: f64 = 1e-3;
        let state_shape = {
            let (s, v) = (self.q.shape(), self.v.shape());
            vec![s[0], s[2], s[3], v[3]]
        };
        let h0 = self
            .h0
            .clone()
            .unwrap_or_else(|| HostTensor::zeros(state_shape));
        let mut inputs = [self.q.clone(), self.k.clone(), self.v.clone(), h0];
        std::array::from_fn(|which| {
            (0..inputs[which].len())
                .map(|e| {
                    let x = inputs[which].data()[e];
                    inputs[which].data_mut()[e] = x + EPS;
                    let up = self.loss(form, &inputs);
                    inputs[which].data_mut()[e] = x - EPS;
                    let down = self.loss(form, &inputs);
                    inputs[which].data_mut()[e] = x;
                    (up - down) / (2.0 * EPS)
                })
                .collect()
        })
    }
}

fn assert_matches_finite_differences(case: &Case, form: Form) {
    let g = case.backward(form);
    let fd = case.finite_differences(form);
    let analytic = [g.dq.data(), g.dk.data(), g.dv.data(), g.dh0.data()];
    for ((name, a), f) in ["dq", "dk", "dv", "dh0"].iter().zip(analytic).zip(&fd) {
        let err = max_rel_diff(a, f);
        assert!(
            err <= 1e-6,
            "{form:?} {name}: relative error {err:e} vs finite differences"
        );
    }
}

fn assert_same_gradients(what: &str, a: &Gradients, b: &Gradients, tol: f64) {
    let pairs = [
        ("dq", &a.dq, &b.dq),
        ("dk", &a.dk, &b.dk),
        ("dv", &a.dv, &b.dv),
        ("dh0", &a.dh0, &b.dh0),
    ];
    for (name, x, y) in pairs {
        assert_eq!(x.shape(), y.shape(), "{what} {name}: shapes differ");
        let err = max_rel_diff(x.data(), y.data());
        assert!(
            err <= tol,
            "{what} {name}: relative difference {err:e} > {tol:e}"
        );
    }
}

fn params(gammas: &[f64], scale: Option<f64>) -> RetentionParams {
    RetentionParams::new(Gammas::from_list(gammas.to_vec()).unwrap(), scale)
}

const SMALL: Dims = (2, 7, 2, 3, 4);
const FD_FORMS: [Form; 5] = [
    Form::Recurrent,
    Form::Chunkwise(1),
    Form::Chunkwise(3),
    Form::Chunkwise(7),
    Form::Chunkwise(10),
];

#[test]
fn both_forms_match_finite_differences_with_retnet_gammas_and_default_scale() {
    let p = RetentionParams::new(Gammas::retnet(2).unwrap(), None);
    let case = Case::new(1, SMALL, p, true, true);
    for form in FD_FORMS {
        assert_matches_finite_differences(&case, form);
    }
}

#[test]
fn both_forms_match_finite_differences_with_fast_decays_and_a_non_default_scale() {
    let case = Case::new(2, SMALL, params(&[0.55, 0.9], Some(0.37)), true, true);
    for form in FD_FORMS {
        assert_matches_finite_differences(&case, form);
    }
}

#[test]
fn gradients_without_initial_state_or_state_loss_match_finite_differences() {
    for (h0, d_ht) in [(false, false), (false, true), (true, false)] {
        let case = Case::new(3, SMALL, params(&[0.7, 0.95], Some(1.5)), h0, d_ht);
        for form in FD_FORMS {
            assert_matches_finite_differences(&case, form);
        }
    }
}

#[test]
fn one_token_one_dim_matches_the_closed_form() {
    // o = s q (γ h0 + k v); L = w o + w_h (γ h0 + k v).
    let (q, k, v, h0, w, wh, s, g) = (0.3, -0.7, 1.1, 0.4, 0.9, -0.6, 0.8, 0.75);
    let t = |x: f64| HostTensor::new(vec![1, 1, 1, 1], vec![x]).unwrap();
    let p = params(&[g], Some(s));
    let state = g * h0 + k * v;
    let adj = s * w * q + wh;
    let expected = [s * w * state, adj * v, adj * k, g * adj];
    for form in [Form::Recurrent, Form::Chunkwise(1), Form::Chunkwise(4)] {
        let case = Case {
            q: t(q),
            k: t(k),
            v: t(v),
            h0: Some(t(h0)),
            d_o: t(w),
            d_ht: Some(t(wh)),
            params: p.clone(),
        };
        let gr = case.backward(form);
        let got = [
            gr.dq.data()[0],
            gr.dk.data()[0],
            gr.dv.data()[0],
            gr.dh0.data()[0],
        ];
        for (a, e) in got.iter().zip(expected) {
            assert!((a - e).abs() <= 1e-15, "{form:?}: {got:?} vs {expected:?}");
        }
    }
}

#[test]
fn chunkwise_equals_recurrent_for_every_chunk_size() {
    for (seed, (k, v)) in [(10, (3, 5)), (20, (5, 2))] {
        for t in [1, 9, 33] {
            for (h0, d_ht) in [(false, false), (true, false), (false, true), (true, true)] {
                let p = params(&[0.6, 0.97], Some(0.45));
                let case = Case::new(seed + t as u64, (2, t, 2, k, v), p, h0, d_ht);
                let rec = case.backward(Form::Recurrent);
                for c in [1, 2, 3, 5, t, t + 5] {
                    let chunked = case.backward(Form::Chunkwise(c));
                    let what = format!("T={t} C={c} K={k} V={v} h0={h0} d_ht={d_ht}");
                    assert_same_gradients(&what, &chunked, &rec, 1e-12);
                }
            }
        }
    }
}

/// Sequence `n` of a packed `[1, ΣT, H, D]` tensor as `[1, T_n, H, D]`.
fn unpack(x: &HostTensor<f64>, range: std::ops::Range<usize>) -> HostTensor<f64> {
    let [_, _, h, d] = <[usize; 4]>::try_from(x.shape()).unwrap();
    let data = x.data()[range.start * h * d..range.end * h * d].to_vec();
    HostTensor::new(vec![1, range.len(), h, d], data).unwrap()
}

/// State row `n` of `[N, H, K, V]` as `[1, H, K, V]`.
fn state_row(x: &HostTensor<f64>, n: usize) -> HostTensor<f64> {
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = 1;
    HostTensor::new(shape, x.data()[n * per..(n + 1) * per].to_vec()).unwrap()
}

#[test]
fn varlen_equals_the_per_sequence_loop() {
    let bounds = vec![0, 4, 4, 13, 14];
    let (total, n, h, k, v) = (14, 4, 2, 3, 2);
    // States are per sequence ([N, H, K, V]), not per batch row, so they are drawn here.
    let mut case = Case::new(
        40,
        (1, total, h, k, v),
        params(&[0.8, 0.5], None),
        false,
        false,
    );
    case.h0 = Some(random(&mut SplitMix64::new(41), [n, h, k, v]));
    case.d_ht = Some(random(&mut SplitMix64::new(42), [n, h, k, v]));
    let (h0, d_ht) = (case.h0.as_ref().unwrap(), case.d_ht.as_ref().unwrap());
    let cu = CuSeqlens::new(bounds, total).unwrap();
    for chunk in [None, Some(1), Some(3), Some(20)] {
        let (q, kk, vv, p, d_o) = (&case.q, &case.k, &case.v, &case.params, &case.d_o);
        let packed = match chunk {
            None => recurrent_backward_varlen(q, kk, vv, &cu, p, Some(h0), d_o, Some(d_ht)),
            Some(c) => chunkwise_backward_varlen(q, kk, vv, &cu, p, c, Some(h0), d_o, Some(d_ht)),
        }
        .unwrap();
        for seq in 0..n {
            let range = cu.range(seq);
            let got_dh0 = state_row(&packed.dh0, seq);
            if range.is_empty() {
                // An empty sequence passes its state through: H_T = H0, so dH0 = dH_T.
                assert_eq!(got_dh0, state_row(d_ht, seq));
                continue;
            }
            let one = Case {
                q: unpack(q, range.clone()),
                k: unpack(kk, range.clone()),
                v: unpack(vv, range.clone()),
                h0: Some(state_row(h0, seq)),
                d_o: unpack(d_o, range.clone()),
                d_ht: Some(state_row(d_ht, seq)),
                params: p.clone(),
            };
            let expected = one.backward(chunk.map_or(Form::Recurrent, Form::Chunkwise));
            let got = Gradients {
                dq: unpack(&packed.dq, range.clone()),
                dk: unpack(&packed.dk, range.clone()),
                dv: unpack(&packed.dv, range.clone()),
                dh0: got_dh0,
                // One sequence's d log γ is a part of the packed sum, not equal to it: the
                // sum is checked in reference_backward_decay.rs.
                dlog_gamma: expected.dlog_gamma.clone(),
            };
            assert_same_gradients(&format!("{chunk:?} seq {seq}"), &got, &expected, 0.0);
        }
    }
}

#[test]
fn bad_upstream_shapes_and_chunk_zero_are_typed_errors() {
    let case = Case::new(50, (2, 5, 2, 3, 4), params(&[0.9, 0.8], None), true, true);
    let (q, k, v, p) = (&case.q, &case.k, &case.v, &case.params);
    let (h0, d_o, d_ht) = (case.h0.as_ref(), &case.d_o, case.d_ht.as_ref());
    let shape_error_names = |r: Result<Gradients, RetentionError>, name: &str| match r {
        Err(RetentionError::ShapeMismatch { tensor, .. }) => assert_eq!(tensor, name),
        other => panic!("expected a shape mismatch for {name}, got {other:?}"),
    };
    let d_o_wrong_v = HostTensor::zeros(vec![2, 5, 2, 3]);
    let d_o_rank3 = HostTensor::zeros(vec![2, 5, 8]);
    let d_ht_wrong = HostTensor::zeros(vec![2, 2, 4, 3]);
    let h0_wrong = HostTensor::zeros(vec![1, 2, 3, 4]);
    for bad in [&d_o_wrong_v, &d_o_rank3] {
        shape_error_names(recurrent_backward(q, k, v, p, h0, bad, d_ht), "d_o");
        shape_error_names(chunkwise_backward(q, k, v, p, 2, h0, bad, d_ht), "d_o");
    }
    shape_error_names(
        recurrent_backward(q, k, v, p, h0, d_o, Some(&d_ht_wrong)),
        "d_ht",
    );
    shape_error_names(
        chunkwise_backward(q, k, v, p, 2, h0, d_o, Some(&d_ht_wrong)),
        "d_ht",
    );
    shape_error_names(
        recurrent_backward(q, k, v, p, Some(&h0_wrong), d_o, d_ht),
        "h0",
    );
    shape_error_names(
        chunkwise_backward(q, k, v, p, 3, Some(&h0_wrong), d_o, d_ht),
        "h0",
    );
    assert_eq!(
        chunkwise_backward(q, k, v, p, 0, h0, d_o, d_ht),
        Err(RetentionError::ZeroChunk)
    );
    let wrong_heads = params(&[0.9], None);
    assert!(matches!(
        recurrent_backward(q, k, v, &wrong_heads, h0, d_o, d_ht),
        Err(RetentionError::GammaCount { .. })
    ));

    // Packed batches: B must be 1, cu_seqlens must cover the packed tokens, chunk ≥ 1.
    let cu = CuSeqlens::new(vec![0, 2, 5], 5).unwrap();
    shape_error_names(
        recurrent_backward_varlen(q, k, v, &cu, p, None, d_o, None),
        "q",
    );
    let packed = Case::new(51, (1, 6, 2, 3, 4), p.clone(), false, false);
    let (q1, k1, v1, d_o1) = (&packed.q, &packed.k, &packed.v, &packed.d_o);
    assert!(matches!(
        recurrent_backward_varlen(q1, k1, v1, &cu, p, None, d_o1, None),
        Err(RetentionError::InvalidCuSeqlens(_))
    ));
    let cu6 = CuSeqlens::new(vec![0, 2, 6], 6).unwrap();
    assert_eq!(
        chunkwise_backward_varlen(q1, k1, v1, &cu6, p, 0, None, d_o1, None),
        Err(RetentionError::ZeroChunk)
    );
    let d_ht_per_batch_row = HostTensor::zeros(vec![1, 2, 3, 4]);
    shape_error_names(
        chunkwise_backward_varlen(
            q1,
            k1,
            v1,
            &cu6,
            p,
            2,
            None,
            d_o1,
            Some(&d_ht_per_batch_row),
        ),
        "d_ht",
    );
}

fn dims() -> impl Strategy<Value = Dims> {
    (1..=2usize, 1..=12usize, 1..=2usize, 1..=4usize, 1..=4usize)
}

fn gammas(heads: usize, seed: u64) -> RetentionParams {
    let mut rng = SplitMix64::new(seed);
    let g: Vec<f64> = (0..heads)
        .map(|_| 0.65 + 0.34 * rng.symmetric().abs())
        .collect();
    params(&g, Some(0.5 + rng.symmetric().abs()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_shapes_match_finite_differences(
        d in dims(), chunk in 1..=14usize, seed in any::<u64>(), h0 in any::<bool>(),
        d_ht in any::<bool>(),
    ) {
        let case = Case::new(seed, d, gammas(d.2, seed), h0, d_ht);
        assert_matches_finite_differences(&case, Form::Recurrent);
        assert_matches_finite_differences(&case, Form::Chunkwise(chunk));
    }

    #[test]
    fn random_shapes_chunkwise_equals_recurrent(
        b in 1..=2usize, t in 1..=40usize, h in 1..=3usize, k in 1..=6usize, v in 1..=6usize,
        chunk in 1..=45usize, seed in any::<u64>(), h0 in any::<bool>(), d_ht in any::<bool>(),
    ) {
        let case = Case::new(seed, (b, t, h, k, v), gammas(h, seed), h0, d_ht);
        let what = format!("T={t} C={chunk}");
        let (chunked, rec) = (case.backward(Form::Chunkwise(chunk)), case.backward(Form::Recurrent));
        assert_same_gradients(&what, &chunked, &rec, 1e-12);
    }
}
