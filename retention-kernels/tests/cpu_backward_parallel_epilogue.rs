//! CPU parallel backward and gated-epilogue backward against the f64 reference backward (on
//! the same dtype-rounded inputs) and, on tiny shapes, central finite differences of the f64
//! forward. Tolerances as the forward's (ARCHITECTURE §4): f32 1e-5 max relative, f16/bf16
//! 5e-3 relative RMSE. d log γ (f32 in every dtype) is a cancelling reduction: its error is
//! held to 1e-5 of Σ|terms|, the reference's d log γ on |inputs| (as in cpu_backward.rs).

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, assert_state, params, random};
use retention_core::{Gammas, HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::{self, RetentionParams};

/// d log γ of the reference parallel backward on |inputs| with |scale|: Σ |terms| per head.
fn abs_reference(
    q: &HostTensor<f64>,
    k: &HostTensor<f64>,
    v: &HostTensor<f64>,
    p: &RetentionParams,
    d_o: &HostTensor<f64>,
) -> HostTensor<f64> {
    let abs = |t: &HostTensor<f64>| {
        HostTensor::new(
            t.shape().to_vec(),
            t.data().iter().map(|x| x.abs()).collect(),
        )
        .unwrap()
    };
    let p = RetentionParams::new(p.gammas.clone(), p.scale.map(f64::abs));
    reference::parallel_backward(&abs(q), &abs(k), &abs(v), &p, &abs(d_o))
        .unwrap()
        .dlog_gamma
}

/// d log γ within 1e-5 of Σ|terms| (`bound`) per head.
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
            "dlog_gamma {what}: {g} vs {w}: error {err:.3e} of Σ|terms| {b:.3e}"
        );
    }
}

fn parallel_matches_reference<T: CpuElement>() {
    // T = 150 spans three blocks of 64 with a partial last one; odd K, V.
    for (dims, p) in [
        ((2, 150, 3, 12, 10), params(3, Some(0.37))),
        ((1, 9, 2, 5, 3), params(2, None)),
        (
            (1, 130, 2, 4, 6),
            RetentionParams::new(Gammas::from_list(vec![0.2, 0.9999]).unwrap(), Some(3.0)),
        ),
        (
            (1, 140, 2, 8, 8),
            RetentionParams::new(Gammas::retnet_sharded(2, 9).unwrap(), None),
        ),
    ] {
        let x = Qkv::<T>::new(900, dims);
        let d_o: HostTensor<T> = random(910, &[dims.0, dims.1, dims.2, dims.4]);
        let got = cpu::parallel_backward(&x.q, &x.k, &x.v, &p, &d_o).unwrap();
        let (q, k, v) = x.f64();
        let want = reference::parallel_backward(&q, &k, &v, &p, &d_o.to_f64()).unwrap();
        let what = format!("{dims:?}");
        assert_matches(&format!("parallel dq {what}"), &got.dq, &want.dq);
        assert_matches(&format!("parallel dk {what}"), &got.dk, &want.dk);
        assert_matches(&format!("parallel dv {what}"), &got.dv, &want.dv);
        let bound = abs_reference(&q, &k, &v, &p, &d_o.to_f64());
        assert_dlog_gamma(
            &format!("parallel {what}"),
            &got.dlog_gamma,
            &want.dlog_gamma,
            &bound,
        );
    }
}

#[test]
fn parallel_backward_matches_reference_every_dtype() {
    for_each_dtype!(parallel_matches_reference);
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Central differences of `loss` in every element of `x`.
fn fd(x: &HostTensor<f64>, loss: impl Fn(&HostTensor<f64>) -> f64) -> Vec<f64> {
    const EPS: f64 = 1e-4;
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

fn as_tensor(like: &HostTensor<f64>, data: Vec<f64>) -> HostTensor<f64> {
    HostTensor::new(like.shape().to_vec(), data).unwrap()
}

#[test]
fn parallel_backward_matches_finite_differences_on_a_tiny_problem() {
    let gammas = vec![0.5, 0.95];
    let p = RetentionParams::new(Gammas::from_list(gammas.clone()).unwrap(), Some(0.6));
    let x = Qkv::<f32>::new(920, (2, 6, 2, 3, 2));
    let d_o: HostTensor<f32> = random(921, &[2, 6, 2, 2]);
    let got = cpu::parallel_backward(&x.q, &x.k, &x.v, &p, &d_o).unwrap();
    let (q, k, v) = x.f64();
    let w = d_o.to_f64();
    let loss =
        |q: &HostTensor<f64>, k: &HostTensor<f64>, v: &HostTensor<f64>, p: &RetentionParams| {
            dot(reference::parallel(q, k, v, p).unwrap().data(), w.data())
        };
    assert_state(
        "dq vs fd",
        &got.dq,
        &as_tensor(&q, fd(&q, |y| loss(y, &k, &v, &p))),
    );
    assert_state(
        "dk vs fd",
        &got.dk,
        &as_tensor(&k, fd(&k, |y| loss(&q, y, &v, &p))),
    );
    assert_state(
        "dv vs fd",
        &got.dv,
        &as_tensor(&v, fd(&v, |y| loss(&q, &k, y, &p))),
    );
    let log_g = HostTensor::new(vec![2], gammas.iter().map(|g: &f64| g.ln()).collect()).unwrap();
    let dlg = fd(&log_g, |lg| {
        let g = lg.data().iter().map(|x| x.exp()).collect();
        loss(
            &q,
            &k,
            &v,
            &RetentionParams::new(Gammas::from_list(g).unwrap(), Some(0.6)),
        )
    });
    let bound = abs_reference(&q, &k, &v, &p, &w);
    assert_dlog_gamma("vs fd", &got.dlog_gamma, &as_tensor(&log_g, dlg), &bound);
}

fn epilogue_matches_reference<T: CpuElement>() {
    let shape = [2, 33, 3, 10];
    let o: HostTensor<T> = random(930, &shape);
    let g: HostTensor<T> = random(931, &shape);
    let dy: HostTensor<T> = random(932, &shape);
    for eps in [0.0, 1e-6, 0.25] {
        let got = cpu::msr_epilogue_backward(&o, &g, eps, &dy).unwrap();
        let want =
            reference::msr_epilogue_backward(&o.to_f64(), &g.to_f64(), eps, &dy.to_f64()).unwrap();
        assert_matches(&format!("epilogue do, eps {eps}"), &got.d_o, &want.d_o);
        assert_matches(&format!("epilogue dg, eps {eps}"), &got.dg, &want.dg);
    }
}

#[test]
fn epilogue_backward_matches_reference_every_dtype() {
    for_each_dtype!(epilogue_matches_reference);
}

#[test]
fn epilogue_backward_matches_finite_differences_on_a_tiny_problem() {
    let shape = [1, 2, 2, 5];
    let o: HostTensor<f32> = random(940, &shape);
    let g: HostTensor<f32> = random(941, &shape);
    let dy: HostTensor<f32> = random(942, &shape);
    let (of, gf, w) = (o.to_f64(), g.to_f64(), dy.to_f64());
    let got = cpu::msr_epilogue_backward(&o, &g, 1e-6, &dy).unwrap();
    let loss = |o: &HostTensor<f64>, g: &HostTensor<f64>| {
        dot(
            reference::msr_epilogue(o, g, 1e-6).unwrap().data(),
            w.data(),
        )
    };
    assert_state(
        "do vs fd",
        &got.d_o,
        &as_tensor(&of, fd(&of, |y| loss(y, &gf))),
    );
    assert_state(
        "dg vs fd",
        &got.dg,
        &as_tensor(&gf, fd(&gf, |y| loss(&of, y))),
    );
}

#[test]
fn bad_shapes_and_eps_are_typed_errors() {
    let x = Qkv::<f32>::new(950, (1, 5, 2, 3, 4));
    let p = params(2, None);
    let bad: HostTensor<f32> = random(951, &[1, 5, 2, 3]);
    assert!(matches!(
        cpu::parallel_backward(&x.q, &x.k, &x.v, &p, &bad),
        Err(RetentionError::ShapeMismatch { tensor, .. }) if tensor == "d_o"
    ));
    let o: HostTensor<f32> = random(952, &[1, 5, 2, 4]);
    assert!(matches!(
        cpu::msr_epilogue_backward(&o, &o, 0.0, &bad),
        Err(RetentionError::ShapeMismatch { tensor, .. }) if tensor == "dy"
    ));
    assert!(matches!(
        cpu::msr_epilogue_backward(&o, &o, -1.0, &o),
        Err(RetentionError::Unsupported { .. })
    ));
}
