//! CPU chunkwise backward against the f64 reference backward (on the same dtype-rounded
//! inputs) and, on tiny shapes, against central finite differences of the f64 forward.
//! Tolerances are the forward's (ARCHITECTURE §4): f32 gradients 1e-5 max relative, f16/bf16
//! gradients 5e-3 relative RMSE; dH0 is f32 in every dtype: 1e-5 max relative. d log γ is one
//! f32 reduction per head over every token's products, which cancel (a random case had
//! d log γ = −0.0054 from terms whose absolute values sum to 361), so its error is bounded
//! against that sum — the reference's d log γ on |inputs| (see `Case::reference_abs`):
//! |got − want| ≤ 1e-5 · Σ|terms| per head.

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, assert_state, params, random, random_state};
use retention_core::{CuSeqlens, Gammas, HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement, CpuGradients};
use retention_kernels::reference::{self, Gradients, RetentionParams};

/// A problem: inputs in `T`, upstream gradients, optional h0 / dH_T.
struct Case<T: CpuElement> {
    x: Qkv<T>,
    d_o: HostTensor<T>,
    h0: Option<HostTensor<f32>>,
    d_ht: Option<HostTensor<f32>>,
}

impl<T: CpuElement> Case<T> {
    fn new(
        seed: u64,
        dims: (usize, usize, usize, usize, usize),
        rows: usize,
        h0: bool,
        dht: bool,
    ) -> Self {
        let (b, t, h, k, v) = dims;
        Self {
            x: Qkv::new(seed, dims),
            d_o: random(seed + 10, &[b, t, h, v]),
            h0: h0.then(|| random_state(seed + 11, &[rows, h, k, v])),
            d_ht: dht.then(|| random_state(seed + 12, &[rows, h, k, v])),
        }
    }

    fn cpu(&self, p: &RetentionParams, chunk: usize) -> CpuGradients<T> {
        let x = &self.x;
        cpu::chunkwise_backward(
            &x.q,
            &x.k,
            &x.v,
            p,
            chunk,
            self.h0.as_ref(),
            &self.d_o,
            self.d_ht.as_ref(),
        )
        .unwrap()
    }

    /// The reference backward on |inputs| with |scale|: every elementary product of every
    /// derivation at its absolute value, so its d log γ bounds Σ |terms| of the reduction —
    /// the scale f32 rounding errors of d log γ are proportional to (cancellation can make
    /// d log γ itself far smaller).
    fn reference_abs(&self, p: &RetentionParams, chunk: usize) -> Gradients {
        let (q, k, v) = self.x.f64();
        let h0 = self.h0.as_ref().map(|t| abs(&t.to_f64()));
        let d_ht = self.d_ht.as_ref().map(|t| abs(&t.to_f64()));
        let p = abs_params(p);
        reference::chunkwise_backward(
            &abs(&q),
            &abs(&k),
            &abs(&v),
            &p,
            chunk,
            h0.as_ref(),
            &abs(&self.d_o.to_f64()),
            d_ht.as_ref(),
        )
        .unwrap()
    }

    /// The reference varlen backward, on |inputs| with |scale| when `absolute` (see
    /// [`Case::reference_abs`]).
    fn reference_varlen(
        &self,
        cu: &CuSeqlens,
        p: &RetentionParams,
        chunk: usize,
        absolute: bool,
    ) -> Gradients {
        let f = |t: HostTensor<f64>| if absolute { abs(&t) } else { t };
        let (q, k, v) = self.x.f64();
        let h0 = self.h0.as_ref().map(|t| f(t.to_f64()));
        let d_ht = self.d_ht.as_ref().map(|t| f(t.to_f64()));
        let p = if absolute { abs_params(p) } else { p.clone() };
        reference::chunkwise_backward_varlen(
            &f(q),
            &f(k),
            &f(v),
            cu,
            &p,
            chunk,
            h0.as_ref(),
            &f(self.d_o.to_f64()),
            d_ht.as_ref(),
        )
        .unwrap()
    }

    fn reference(&self, p: &RetentionParams, chunk: usize) -> Gradients {
        let (q, k, v) = self.x.f64();
        let h0 = self.h0.as_ref().map(HostTensor::to_f64);
        let d_ht = self.d_ht.as_ref().map(HostTensor::to_f64);
        reference::chunkwise_backward(
            &q,
            &k,
            &v,
            p,
            chunk,
            h0.as_ref(),
            &self.d_o.to_f64(),
            d_ht.as_ref(),
        )
        .unwrap()
    }
}

/// |x| elementwise.
fn abs(t: &HostTensor<f64>) -> HostTensor<f64> {
    HostTensor::new(
        t.shape().to_vec(),
        t.data().iter().map(|x| x.abs()).collect(),
    )
    .unwrap()
}

/// The same params with |scale|.
fn abs_params(p: &RetentionParams) -> RetentionParams {
    RetentionParams::new(p.gammas.clone(), p.scale.map(f64::abs))
}

/// d log γ within 1e-5 of Σ|terms| (`bound`, the reference on |inputs|) per head.
fn assert_dlog_gamma(
    what: &str,
    got: &HostTensor<f32>,
    want: &HostTensor<f64>,
    bound: &HostTensor<f64>,
) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for ((g, w), b) in got.data().iter().zip(want.data()).zip(bound.data()) {
        assert!(
            *b > 0.0,
            "{what}: zero bound — the check would prove nothing"
        );
        let err = (f64::from(*g) - w).abs() / b;
        assert!(
            err <= 1e-5,
            "{what}: d log γ {g} vs {w}: error {err:.3e} of Σ|terms| {b:.3e} > 1e-5"
        );
    }
}

fn assert_gradients<T: CpuElement>(
    what: &str,
    got: &CpuGradients<T>,
    want: &Gradients,
    bound: &Gradients,
    check_dh0: bool,
) {
    assert_matches(&format!("dq, {what}"), &got.dq, &want.dq);
    assert_matches(&format!("dk, {what}"), &got.dk, &want.dk);
    assert_matches(&format!("dv, {what}"), &got.dv, &want.dv);
    if check_dh0 {
        assert_state(&format!("dh0, {what}"), &got.dh0, &want.dh0);
    }
    assert_dlog_gamma(
        &format!("dlog_gamma, {what}"),
        &got.dlog_gamma,
        &want.dlog_gamma,
        &bound.dlog_gamma,
    );
}

fn chunk_sizes_states_and_upstreams<T: CpuElement>() {
    // Odd dims exercise vector tails; T = 37 is prime, so no chunk but 1 and 37 divides it.
    let dims = (2, 37, 3, 12, 10);
    let p = params(3, Some(0.37));
    for (h0, dht) in [(true, true), (false, false), (true, false), (false, true)] {
        let case = Case::<T>::new(100, dims, 2, h0, dht);
        for chunk in [1usize, 4, 5, 16, 37, 64] {
            let what = format!("chunk {chunk}, h0 {h0}, dht {dht}");
            let (want, bound) = (case.reference(&p, chunk), case.reference_abs(&p, chunk));
            assert_gradients(&what, &case.cpu(&p, chunk), &want, &bound, true);
        }
    }
}

#[test]
fn chunkwise_backward_matches_reference_every_dtype() {
    for_each_dtype!(chunk_sizes_states_and_upstreams);
}

/// Saved states give bit-identical results only when the forwards and backwards compared
/// all take the per-(row, head) path: at least as many pairs (here 4) as threads. With more
/// threads each op cuts the sequence its own way (segments, chunks), so roundings differ and
/// each is held to the reference elsewhere instead; hence a two-thread pool.
fn saved_states_give_the_same_gradients<T: CpuElement>() {
    on_two_threads(saved_states_give_the_same_gradients_on_this_pool::<T>);
}

fn saved_states_give_the_same_gradients_on_this_pool<T: CpuElement>() {
    let dims = (2, 29, 2, 8, 6);
    let p = params(2, None);
    let case = Case::<T>::new(200, dims, 2, true, true);
    let x = &case.x;
    for chunk in [1usize, 6, 29, 40] {
        let fwd =
            cpu::chunkwise_with_states(&x.q, &x.k, &x.v, &p, chunk, case.h0.as_ref()).unwrap();
        let (o, ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, chunk, case.h0.as_ref()).unwrap();
        assert_eq!(fwd.o, o, "o with states, chunk {chunk}");
        assert_eq!(fwd.ht, ht, "H_T with states, chunk {chunk}");
        let nc = 29usize.div_ceil(chunk);
        assert_eq!(fwd.states.shape(), &[2 * nc, 2, 8, 6]);
        // Chunk i of row b starts from the reference's H_T after i·C tokens.
        let (q, k, v) = x.f64();
        let h0 = case.h0.as_ref().unwrap();
        for i in 0..nc {
            let prefix = |t: &HostTensor<f64>| {
                let [b, _, h, d] = <[usize; 4]>::try_from(t.shape()).unwrap();
                let mut data = Vec::new();
                for bi in 0..b {
                    let o = bi * 29 * h * d;
                    data.extend_from_slice(&t.data()[o..o + i * chunk * h * d]);
                }
                HostTensor::new(vec![b, i * chunk, h, d], data).unwrap()
            };
            let want = if i == 0 {
                h0.to_f64()
            } else {
                reference::chunkwise(
                    &prefix(&q),
                    &prefix(&k),
                    &prefix(&v),
                    &p,
                    chunk,
                    Some(&h0.to_f64()),
                )
                .unwrap()
                .1
            };
            for b in 0..2 {
                let kv = 2 * 8 * 6;
                let got = &fwd.states.data()[(b * nc + i) * kv..(b * nc + i + 1) * kv];
                let got = HostTensor::new(vec![1, 2, 8, 6], got.to_vec()).unwrap();
                let want =
                    HostTensor::new(vec![1, 2, 8, 6], want.data()[b * kv..(b + 1) * kv].to_vec())
                        .unwrap();
                assert_state(
                    &format!("state of chunk {i}, row {b}, chunk {chunk}"),
                    &got,
                    &want,
                );
            }
        }
        let from_states = cpu::chunkwise_backward_with_states(
            &x.q,
            &x.k,
            &x.v,
            &p,
            chunk,
            &fwd.states,
            &case.d_o,
            case.d_ht.as_ref(),
        )
        .unwrap();
        assert_eq!(
            from_states,
            case.cpu(&p, chunk),
            "saved vs recomputed states, chunk {chunk}"
        );
    }
}

#[test]
fn forward_with_states_and_backward_from_them_every_dtype() {
    for_each_dtype!(saved_states_give_the_same_gradients);
}

fn varlen_three_sequences<T: CpuElement>() {
    // Lengths 9, 1 and 30 (ΣT = 40).
    varlen_sequences::<T>(&[0, 9, 10, 40]);
}

fn varlen_with_an_empty_sequence<T: CpuElement>() {
    // Lengths 9, 0, 1 and 30: the empty one's dH0 is its dH_T, and it adds nothing else.
    varlen_sequences::<T>(&[0, 9, 9, 10, 40]);
}

/// Packed sequences between `bounds` (ΣT = 40), with and without H0 and dH_T per sequence.
fn varlen_sequences<T: CpuElement>(bounds: &[usize]) {
    let dims = (1, 40, 2, 8, 6);
    let cu = CuSeqlens::new(bounds.to_vec(), 40).unwrap();
    let p = params(2, Some(1.3));
    for (h0, dht) in [(true, true), (false, false)] {
        let case = Case::<T>::new(300, dims, bounds.len() - 1, h0, dht);
        let x = &case.x;
        let (q, k, v) = x.f64();
        let h0_ref = case.h0.as_ref().map(HostTensor::to_f64);
        let d_ht_ref = case.d_ht.as_ref().map(HostTensor::to_f64);
        for chunk in [1usize, 4, 7, 100] {
            let got = cpu::chunkwise_backward_varlen(
                &x.q,
                &x.k,
                &x.v,
                &cu,
                &p,
                chunk,
                case.h0.as_ref(),
                &case.d_o,
                case.d_ht.as_ref(),
            )
            .unwrap();
            let want = reference::chunkwise_backward_varlen(
                &q,
                &k,
                &v,
                &cu,
                &p,
                chunk,
                h0_ref.as_ref(),
                &case.d_o.to_f64(),
                d_ht_ref.as_ref(),
            )
            .unwrap();
            let bound = case.reference_varlen(&cu, &p, chunk, true);
            assert_gradients(
                &format!("varlen chunk {chunk}, h0 {h0}"),
                &got,
                &want,
                &bound,
                true,
            );
        }
    }
}

#[test]
fn varlen_backward_matches_reference_every_dtype() {
    for_each_dtype!(varlen_three_sequences);
}

#[test]
fn varlen_backward_with_an_empty_sequence_matches_reference_every_dtype() {
    for_each_dtype!(varlen_with_an_empty_sequence);
}

#[test]
fn runtime_gammas_and_sharded_heads_match_reference() {
    let dims = (2, 23, 2, 5, 7);
    let runtime = RetentionParams::new(Gammas::from_list(vec![0.31, 0.9993]).unwrap(), Some(2.0));
    let sharded = RetentionParams::new(Gammas::retnet_sharded(2, 6).unwrap(), None);
    for p in [runtime, sharded] {
        let case = Case::<f32>::new(400, dims, 2, true, true);
        for chunk in [3usize, 8] {
            let what = format!("{:?} chunk {chunk}", p.gammas.as_slice());
            let (want, bound) = (case.reference(&p, chunk), case.reference_abs(&p, chunk));
            assert_gradients(&what, &case.cpu(&p, chunk), &want, &bound, true);
        }
    }
}

#[test]
fn recurrent_backward_equals_the_reference_recurrent_backward() {
    let case = Case::<f32>::new(450, (1, 150, 2, 6, 5), 1, true, true);
    let p = params(2, None);
    let x = &case.x;
    let got = cpu::recurrent_backward(
        &x.q,
        &x.k,
        &x.v,
        &p,
        case.h0.as_ref(),
        &case.d_o,
        case.d_ht.as_ref(),
    )
    .unwrap();
    let (q, k, v) = x.f64();
    let want = reference::recurrent_backward(
        &q,
        &k,
        &v,
        &p,
        case.h0.as_ref().map(HostTensor::to_f64).as_ref(),
        &case.d_o.to_f64(),
        case.d_ht.as_ref().map(HostTensor::to_f64).as_ref(),
    )
    .unwrap();
    assert_gradients("recurrent", &got, &want, &case.reference_abs(&p, 64), true);
}

/// Central differences of the f64 chunkwise forward's loss Σ o ⊙ dO + Σ H_T ⊙ dH_T.
fn finite_differences(case: &Case<f32>, p: &RetentionParams) -> [Vec<f64>; 5] {
    const EPS: f64 = 1e-4;
    let (q, k, v) = case.x.f64();
    let d_o = case.d_o.to_f64();
    let s = q.shape().to_vec();
    let zeros = HostTensor::zeros(vec![s[0], s[2], s[3], v.shape()[3]]);
    let h0 = case.h0.as_ref().map_or(zeros, HostTensor::to_f64);
    let d_ht = case.d_ht.as_ref().map(HostTensor::to_f64);
    let loss = |x: &[HostTensor<f64>; 4], p: &RetentionParams| {
        let (o, ht) = reference::chunkwise(&x[0], &x[1], &x[2], p, 4, Some(&x[3])).unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        dot(o.data(), d_o.data()) + d_ht.as_ref().map_or(0.0, |w| dot(ht.data(), w.data()))
    };
    let mut inputs = [q, k, v, h0];
    let mut out: [Vec<f64>; 5] = Default::default();
    for which in 0..4 {
        for e in 0..inputs[which].len() {
            let x0 = inputs[which].data()[e];
            inputs[which].data_mut()[e] = x0 + EPS;
            let up = loss(&inputs, p);
            inputs[which].data_mut()[e] = x0 - EPS;
            let down = loss(&inputs, p);
            inputs[which].data_mut()[e] = x0;
            out[which].push((up - down) / (2.0 * EPS));
        }
    }
    let gammas = p.gammas.as_slice().to_vec();
    for h in 0..gammas.len() {
        let mut g = gammas.clone();
        let at = |g: &[f64]| RetentionParams::new(Gammas::from_list(g.to_vec()).unwrap(), p.scale);
        g[h] = gammas[h] * EPS.exp();
        let up = loss(&inputs, &at(&g));
        g[h] = gammas[h] * (-EPS).exp();
        let down = loss(&inputs, &at(&g));
        out[4].push((up - down) / (2.0 * EPS));
    }
    out
}

#[test]
fn tiny_problems_match_finite_differences_of_the_forward() {
    let p = RetentionParams::new(Gammas::from_list(vec![0.6, 0.97]).unwrap(), Some(0.7));
    for (h0, dht) in [(true, true), (false, false), (false, true)] {
        let case = Case::<f32>::new(500, (2, 7, 2, 3, 4), 2, h0, dht);
        let fd = finite_differences(&case, &p);
        for chunk in [1usize, 3, 4, 7, 9] {
            let g = case.cpu(&p, chunk);
            let got = [g.dq.to_f64(), g.dk.to_f64(), g.dv.to_f64(), g.dh0.to_f64()];
            let what = format!("vs finite differences, chunk {chunk}, h0 {h0}, dht {dht}");
            for ((name, got), want) in ["dq", "dk", "dv", "dh0"].iter().zip(&got).zip(&fd) {
                let want = HostTensor::new(got.shape().to_vec(), want.clone()).unwrap();
                assert_state(&format!("{name} {what}"), &got.cast(), &want);
            }
            let fd_dlg = HostTensor::new(vec![2], fd[4].clone()).unwrap();
            let bound = case.reference_abs(&p, chunk).dlog_gamma;
            assert_dlog_gamma(
                &format!("dlog_gamma {what}"),
                &g.dlog_gamma,
                &fd_dlg,
                &bound,
            );
        }
    }
}

#[test]
fn a_sequence_split_in_two_gives_the_gradients_of_one_call() {
    let (t, split) = (45, 19);
    let case = Case::<f32>::new(600, (2, t, 2, 8, 8), 2, true, true);
    let p = params(2, None);
    let x = &case.x;
    let whole = case.cpu(&p, 8);
    let part = |a: &HostTensor<f32>, r: std::ops::Range<usize>| {
        let [b, tt, h, d] = <[usize; 4]>::try_from(a.shape()).unwrap();
        let mut data = Vec::new();
        for bi in 0..b {
            data.extend_from_slice(
                &a.data()[(bi * tt + r.start) * h * d..(bi * tt + r.end) * h * d],
            );
        }
        HostTensor::new(vec![b, r.len(), h, d], data).unwrap()
    };
    let (a, b) = (0..split, split..t);
    let (_, mid) = cpu::chunkwise(
        &part(&x.q, a.clone()),
        &part(&x.k, a.clone()),
        &part(&x.v, a.clone()),
        &p,
        8,
        case.h0.as_ref(),
    )
    .unwrap();
    let second = cpu::chunkwise_backward(
        &part(&x.q, b.clone()),
        &part(&x.k, b.clone()),
        &part(&x.v, b.clone()),
        &p,
        8,
        Some(&mid),
        &part(&case.d_o, b.clone()),
        case.d_ht.as_ref(),
    )
    .unwrap();
    let first = cpu::chunkwise_backward(
        &part(&x.q, a.clone()),
        &part(&x.k, a.clone()),
        &part(&x.v, a.clone()),
        &p,
        8,
        case.h0.as_ref(),
        &part(&case.d_o, a.clone()),
        Some(&second.dh0),
    )
    .unwrap();
    let want = case.reference(&p, 8);
    let ref_part =
        |g: &HostTensor<f64>, r: std::ops::Range<usize>| part(&g.cast::<f32>(), r).to_f64();
    for (name, got, full) in [
        ("dq first", &first.dq, ref_part(&want.dq, a.clone())),
        ("dq second", &second.dq, ref_part(&want.dq, b.clone())),
        ("dk first", &first.dk, ref_part(&want.dk, a.clone())),
        ("dk second", &second.dk, ref_part(&want.dk, b.clone())),
        ("dv first", &first.dv, ref_part(&want.dv, a.clone())),
        ("dv second", &second.dv, ref_part(&want.dv, b.clone())),
    ] {
        assert_state(name, got, &full);
    }
    assert_state("dh0 of the split", &first.dh0, &want.dh0);
    let summed: Vec<f32> = first
        .dlog_gamma
        .data()
        .iter()
        .zip(second.dlog_gamma.data())
        .map(|(x, y)| x + y)
        .collect();
    assert_dlog_gamma(
        "dlog_gamma of the split",
        &HostTensor::new(vec![2], summed).unwrap(),
        &want.dlog_gamma,
        &case.reference_abs(&p, 8).dlog_gamma,
    );
    assert_state("dh0 whole", &whole.dh0, &want.dh0);
}

#[test]
fn bad_shapes_and_chunk_zero_are_typed_errors() {
    let case = Case::<f32>::new(700, (2, 5, 2, 3, 4), 2, true, true);
    let (x, p) = (&case.x, params(2, None));
    let bad_do: HostTensor<f32> = random(1, &[2, 5, 2, 3]);
    let bad_state: HostTensor<f32> = random(2, &[2, 2, 4, 3]);
    let h0 = case.h0.as_ref();
    let shape_err = |r: retention_core::Result<CpuGradients<f32>>, what: &str| match r {
        Err(RetentionError::ShapeMismatch { tensor, .. }) => assert_eq!(tensor, what),
        other => panic!("{what}: expected a shape mismatch, got {other:?}"),
    };
    shape_err(
        cpu::chunkwise_backward(&x.q, &x.k, &x.v, &p, 2, h0, &bad_do, None),
        "d_o",
    );
    shape_err(
        cpu::chunkwise_backward(&x.q, &x.k, &x.v, &p, 2, h0, &case.d_o, Some(&bad_state)),
        "d_ht",
    );
    shape_err(
        cpu::chunkwise_backward(&x.q, &x.k, &x.v, &p, 2, Some(&bad_state), &case.d_o, None),
        "h0",
    );
    shape_err(
        cpu::chunkwise_backward_with_states(&x.q, &x.k, &x.v, &p, 2, &bad_state, &case.d_o, None),
        "states",
    );
    assert!(matches!(
        cpu::chunkwise_backward(&x.q, &x.k, &x.v, &p, 0, h0, &case.d_o, None),
        Err(RetentionError::ZeroChunk)
    ));
    let cu = CuSeqlens::new(vec![0, 2, 5], 5).unwrap();
    assert!(
        cpu::chunkwise_backward_varlen(&x.q, &x.k, &x.v, &cu, &p, 2, None, &case.d_o, None)
            .is_err(),
        "B = 2 is not packed"
    );
}

#[test]
fn bf16_inputs_on_the_slowest_heads_at_t_65536_give_finite_gradients_within_tolerance() {
    // Global heads 14 and 15 of 16 (γ = 1 − 2^−19, 1 − 2^−20): states barely decay over the
    // whole sequence, the case where 16-bit γ or positions would stop the decay (PITFALLS 5).
    let t = 65536;
    let p = RetentionParams::new(Gammas::retnet_sharded(2, 14).unwrap(), None);
    let case = Case::<half::bf16>::new(800, (1, t, 2, 16, 16), 1, true, true);
    let got = case.cpu(&p, 64);
    for (name, data) in [
        ("dq", got.dq.to_f64()),
        ("dk", got.dk.to_f64()),
        ("dv", got.dv.to_f64()),
        ("dh0", got.dh0.to_f64()),
        ("dlog_gamma", got.dlog_gamma.to_f64()),
    ] {
        assert!(
            data.data().iter().all(|x| x.is_finite()),
            "{name}: not finite"
        );
    }
    let (want, bound) = (case.reference(&p, 64), case.reference_abs(&p, 64));
    assert_gradients("bf16, T = 65536, slowest heads", &got, &want, &bound, true);
}

/// Heads `heads` of a `[B, T, H, D]` tensor (or of `[rows, H, K, V]` states with `state`).
fn heads_of<T: CpuElement>(
    x: &HostTensor<T>,
    heads: std::ops::Range<usize>,
    state: bool,
) -> HostTensor<T> {
    let s = x.shape().to_vec();
    let (outer, h, inner) = if state {
        (s[0], s[1], s[2] * s[3])
    } else {
        (s[0] * s[1], s[2], s[3])
    };
    let mut data = Vec::new();
    for o in 0..outer {
        data.extend_from_slice(
            &x.data()[(o * h + heads.start) * inner..(o * h + heads.end) * inner],
        );
    }
    let mut shape = s;
    shape[if state { 1 } else { 2 }] = heads.len();
    HostTensor::new(shape, data).unwrap()
}

#[test]
fn head_shards_with_an_offset_give_the_unsharded_gradients() {
    // Four global heads, in two shards of two: each shard's decays come from its offset.
    let case = Case::<f32>::new(1000, (2, 21, 4, 6, 5), 2, true, true);
    let whole = case.cpu(
        &RetentionParams::new(Gammas::retnet(4).unwrap(), Some(0.5)),
        8,
    );
    for first in [0usize, 2] {
        let r = first..first + 2;
        let p = RetentionParams::new(Gammas::retnet_sharded(2, first).unwrap(), Some(0.5));
        let x = &case.x;
        let shard = cpu::chunkwise_backward(
            &heads_of(&x.q, r.clone(), false),
            &heads_of(&x.k, r.clone(), false),
            &heads_of(&x.v, r.clone(), false),
            &p,
            8,
            Some(&heads_of(case.h0.as_ref().unwrap(), r.clone(), true)),
            &heads_of(&case.d_o, r.clone(), false),
            Some(&heads_of(case.d_ht.as_ref().unwrap(), r.clone(), true)),
        )
        .unwrap();
        // The same per-(row, head) computation: equal to the last bit.
        assert_eq!(
            shard.dq,
            heads_of(&whole.dq, r.clone(), false),
            "dq shard {first}"
        );
        assert_eq!(
            shard.dk,
            heads_of(&whole.dk, r.clone(), false),
            "dk shard {first}"
        );
        assert_eq!(
            shard.dv,
            heads_of(&whole.dv, r.clone(), false),
            "dv shard {first}"
        );
        assert_eq!(
            shard.dh0,
            heads_of(&whole.dh0, r.clone(), true),
            "dh0 shard {first}"
        );
        assert_eq!(
            shard.dlog_gamma.data(),
            &whole.dlog_gamma.data()[r],
            "dlog_gamma shard {first}"
        );
    }
}

/// Bit-identical on the per-(sequence, head) path (6 pairs ≥ 2 threads), as
/// `saved_states_give_the_same_gradients` explains.
#[test]
fn varlen_forward_with_states_equals_the_varlen_forward() {
    on_two_threads(varlen_forward_with_states_equals_the_varlen_forward_on_this_pool);
}

fn varlen_forward_with_states_equals_the_varlen_forward_on_this_pool() {
    let x = Qkv::<f32>::new(1100, (1, 40, 2, 8, 6));
    let cu = CuSeqlens::new(vec![0, 9, 10, 40], 40).unwrap();
    let p = params(2, None);
    let h0 = random_state(1101, &[3, 2, 8, 6]);
    for chunk in [1usize, 4, 7, 100] {
        let f =
            cpu::chunkwise_varlen_with_states(&x.q, &x.k, &x.v, &cu, &p, chunk, Some(&h0)).unwrap();
        let (o, ht) = cpu::chunkwise_varlen(&x.q, &x.k, &x.v, &cu, &p, chunk, Some(&h0)).unwrap();
        assert_eq!(f.o, o, "o, chunk {chunk}");
        assert_eq!(f.ht, ht, "H_T, chunk {chunk}");
        let chunks: usize = [9usize, 1, 30].iter().map(|t| t.div_ceil(chunk)).sum();
        assert_eq!(f.states.shape(), &[chunks, 2, 8, 6]);
        // Each sequence's first chunk starts from its own H0.
        let kv = 2 * 8 * 6;
        let firsts = [0, 9usize.div_ceil(chunk), 9usize.div_ceil(chunk) + 1];
        for (n, first) in firsts.iter().enumerate() {
            assert_eq!(
                &f.states.data()[first * kv..(first + 1) * kv],
                &h0.data()[n * kv..(n + 1) * kv]
            );
        }
    }
}

mod random_shapes {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_problems_match_the_reference(
            b in 1usize..3, t in 1usize..40, h in 1usize..3, k in 1usize..9, v in 1usize..9,
            chunk in 1usize..50, h0 in any::<bool>(), dht in any::<bool>(), seed in 0u64..1000,
        ) {
            let case = Case::<f32>::new(seed, (b, t, h, k, v), b, h0, dht);
            let p = params(h, Some(0.9));
            let got = case.cpu(&p, chunk);
            let want = case.reference(&p, chunk);
            let bound = case.reference_abs(&p, chunk);
            let what = format!("random {:?} chunk {chunk}", (b, t, h, k, v));
            // Without h0 and dH_T, dH0 is still defined (the gradient at H0 = 0) and checked.
            if want.dlog_gamma.data().iter().all(|x| *x == 0.0) {
                // One token and no H0: no decay touches anything, d log γ is exactly 0.
                prop_assert!(t == 1 && !h0, "{what}: zero d log γ only for T = 1 without H0");
                prop_assert!(got.dlog_gamma.data().iter().all(|x| *x == 0.0), "{what}");
                assert_matches(&format!("dq, {what}"), &got.dq, &want.dq);
                assert_matches(&format!("dk, {what}"), &got.dk, &want.dk);
                assert_matches(&format!("dv, {what}"), &got.dv, &want.dv);
                assert_state(&format!("dh0, {what}"), &got.dh0, &want.dh0);
            } else {
                assert_gradients(&what, &got, &want, &bound, true);
            }
        }
    }
}

/// Run `f` on a rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn chunk_parallel_path<T: CpuElement>() {
    // One or two (row, head) pairs on eight threads: chunks of a pair run in parallel.
    for (dims, rows, cu) in [
        ((1, 203, 1, 12, 10), 1, None),
        ((2, 150, 1, 8, 6), 2, None),
        (
            (1, 120, 1, 8, 6),
            3,
            Some(CuSeqlens::new(vec![0, 0, 37, 120], 120).unwrap()),
        ),
    ] {
        let p = params(1, Some(0.6));
        for (h0, dht) in [(true, true), (false, false)] {
            let case = Case::<T>::new(1200, dims, rows, h0, dht);
            let x = &case.x;
            let (q, k, v) = x.f64();
            let h0_ref = case.h0.as_ref().map(HostTensor::to_f64);
            let d_ht_ref = case.d_ht.as_ref().map(HostTensor::to_f64);
            for chunk in [1usize, 7, 16] {
                let what = format!("{dims:?} varlen {} chunk {chunk} h0 {h0}", cu.is_some());
                let (got, want) = match &cu {
                    None => (
                        on_threads(8, || case.cpu(&p, chunk)),
                        case.reference(&p, chunk),
                    ),
                    Some(cu) => (
                        on_threads(8, || {
                            cpu::chunkwise_backward_varlen(
                                &x.q,
                                &x.k,
                                &x.v,
                                cu,
                                &p,
                                chunk,
                                case.h0.as_ref(),
                                &case.d_o,
                                case.d_ht.as_ref(),
                            )
                            .unwrap()
                        }),
                        reference::chunkwise_backward_varlen(
                            &q,
                            &k,
                            &v,
                            cu,
                            &p,
                            chunk,
                            h0_ref.as_ref(),
                            &case.d_o.to_f64(),
                            d_ht_ref.as_ref(),
                        )
                        .unwrap(),
                    ),
                };
                let bound = match &cu {
                    None => case.reference_abs(&p, chunk),
                    Some(cu) => case.reference_varlen(cu, &p, chunk, true),
                };
                assert_gradients(&what, &got, &want, &bound, true);
            }
            if cu.is_none() {
                // Saved states through the same path.
                let f =
                    cpu::chunkwise_with_states(&x.q, &x.k, &x.v, &p, 7, case.h0.as_ref()).unwrap();
                let got = on_threads(8, || {
                    cpu::chunkwise_backward_with_states(
                        &x.q,
                        &x.k,
                        &x.v,
                        &p,
                        7,
                        &f.states,
                        &case.d_o,
                        case.d_ht.as_ref(),
                    )
                    .unwrap()
                });
                let (want, bound) = (case.reference(&p, 7), case.reference_abs(&p, 7));
                assert_gradients("saved states, chunk-parallel", &got, &want, &bound, true);
            }
        }
    }
}

#[test]
fn fewer_pairs_than_threads_run_chunks_in_parallel_and_match_every_dtype() {
    for_each_dtype!(chunk_parallel_path);
}

fn chunk_parallel_forward<T: CpuElement>() {
    // One or two (row, head) pairs on eight threads: the forward's chunks run in parallel;
    // o, H_T and every saved state match the f64 reference, dense and varlen.
    let p = params(1, Some(0.6));
    for (dims, cu) in [
        ((1, 203, 1, 12, 10), None),
        (
            (1, 120, 1, 8, 6),
            Some(CuSeqlens::new(vec![0, 0, 37, 120], 120).unwrap()),
        ),
    ] {
        let x = Qkv::<T>::new(1300, dims);
        let (q, k, v) = x.f64();
        let rows = cu.as_ref().map_or(1, CuSeqlens::num_seqs);
        for h0 in [None, Some(random_state(1301, &[rows, 1, dims.3, dims.4]))] {
            let h0_ref = h0.as_ref().map(HostTensor::to_f64);
            for chunk in [7usize, 16] {
                let what = format!("{dims:?} chunk {chunk} h0 {}", h0.is_some());
                let f = on_threads(8, || match &cu {
                    None => cpu::chunkwise_with_states(&x.q, &x.k, &x.v, &p, chunk, h0.as_ref()),
                    Some(cu) => cpu::chunkwise_varlen_with_states(
                        &x.q,
                        &x.k,
                        &x.v,
                        cu,
                        &p,
                        chunk,
                        h0.as_ref(),
                    ),
                })
                .unwrap();
                let (o, ht) = match &cu {
                    None => reference::chunkwise(&q, &k, &v, &p, chunk, h0_ref.as_ref()),
                    Some(cu) => {
                        reference::chunkwise_varlen(&q, &k, &v, cu, &p, chunk, h0_ref.as_ref())
                    }
                }
                .unwrap();
                assert_matches(&format!("o, {what}"), &f.o, &o);
                assert_state(&format!("H_T, {what}"), &f.ht, &ht);
                // Every saved state is the reference's H_T after the tokens before its chunk.
                let (seqs, kv) = (
                    cu.as_ref()
                        .map_or(std::iter::once(0..dims.1).collect::<Vec<_>>(), |cu| {
                            (0..cu.num_seqs()).map(|n| cu.range(n)).collect()
                        }),
                    dims.3 * dims.4,
                );
                let mut slot = 0;
                for (n, range) in seqs.into_iter().enumerate() {
                    for start in (range.start..range.end).step_by(chunk) {
                        let cut = |t: &HostTensor<f64>| {
                            let d = t.shape()[3];
                            let data = t.data()[range.start * d..start * d].to_vec();
                            HostTensor::new(vec![1, start - range.start, 1, d], data).unwrap()
                        };
                        let h0n = h0_ref.as_ref().map(|h| {
                            HostTensor::new(
                                vec![1, 1, dims.3, dims.4],
                                h.data()[n * kv..(n + 1) * kv].to_vec(),
                            )
                            .unwrap()
                        });
                        let got = f.states.data()[slot * kv..(slot + 1) * kv].to_vec();
                        let want = match (start == range.start, h0n) {
                            (true, None) => {
                                assert!(got.iter().all(|&g| g == 0.0), "state {slot}, {what}");
                                slot += 1;
                                continue;
                            }
                            (true, Some(h)) => h,
                            (false, h) => {
                                reference::chunkwise(
                                    &cut(&q),
                                    &cut(&k),
                                    &cut(&v),
                                    &p,
                                    chunk,
                                    h.as_ref(),
                                )
                                .unwrap()
                                .1
                            }
                        };
                        let got = HostTensor::new(vec![1, 1, dims.3, dims.4], got).unwrap();
                        assert_state(&format!("state {slot}, {what}"), &got, &want);
                        slot += 1;
                    }
                }
                assert_eq!(slot, f.states.shape()[0], "{what}: chunk count");
            }
        }
    }
}

#[test]
fn forward_with_states_on_fewer_pairs_than_threads_matches_reference_every_dtype() {
    for_each_dtype!(chunk_parallel_forward);
}

/// `f` on a two-thread rayon pool, whatever the machine's core count.
fn on_two_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(f)
}
