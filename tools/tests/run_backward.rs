//! `retention run --backward`: the reference device writes the f64 reference backward rounded
//! once (bit-exact), the CPU device matches it within the CPU backward's tolerances (f32: 1e-5
//! max relative; d log γ within 1e-5 of Σ|terms|, the reference on |inputs|), the epilogue's
//! `dy`/`g` route do through its backward, and the emulated device's GPU backward kernels
//! (chunkwise and recurrent, dense and varlen, parallel, the epilogue's backward) match the
//! reference device (f32: 1e-5 max relative; bf16: 5e-3 relative RMSE; d log γ within 1e-5 of
//! Σ|terms|, or 1e-4 relative on the packed batch, as the CPU device there).

mod common;

use common::{
    Stored, assert_exact, f32_values, random, retention, run_ok, tensor_values, workspace,
    write_input,
};
use retention_core::{Dtype, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};

const DIMS: (usize, usize, usize, usize, usize) = (2, 7, 2, 8, 4);

struct Problem {
    q: Stored,
    k: Stored,
    v: Stored,
    h0: Stored,
    d_o: Stored,
    d_ht: Stored,
}

fn problem() -> Problem {
    let (b, t, h, dk, dv) = DIMS;
    let mut rng = SplitMix64::new(17);
    let dt = Dtype::F32;
    Problem {
        q: random("q", dt, &[b, t, h, dk], &mut rng),
        k: random("k", dt, &[b, t, h, dk], &mut rng),
        v: random("v", dt, &[b, t, h, dv], &mut rng),
        h0: random("h0", dt, &[b, h, dk, dv], &mut rng),
        d_o: random("do", dt, &[b, t, h, dv], &mut rng),
        d_ht: random("dht", dt, &[b, h, dk, dv], &mut rng),
    }
}

fn abs(t: &HostTensor<f64>) -> HostTensor<f64> {
    HostTensor::new(
        t.shape().to_vec(),
        t.data().iter().map(|x| x.abs()).collect(),
    )
    .unwrap()
}

/// The reference chunkwise backward (C = 3), on |inputs| when `absolute`.
fn want(p: &Problem, d_o: &HostTensor<f64>, absolute: bool) -> reference::Gradients {
    let f = |t: &HostTensor<f64>| if absolute { abs(t) } else { t.clone() };
    let params = RetentionParams::new(Gammas::retnet(DIMS.2).unwrap(), None);
    reference::chunkwise_backward(
        &f(&p.q.values),
        &f(&p.k.values),
        &f(&p.v.values),
        &params,
        3,
        Some(&f(&p.h0.values)),
        &f(d_o),
        Some(&f(&p.d_ht.values)),
    )
    .unwrap()
}

fn inputs(p: &Problem) -> Vec<common::Tensor> {
    [&p.q, &p.k, &p.v, &p.h0, &p.d_o, &p.d_ht]
        .iter()
        .map(|s| s.tensor.clone())
        .collect()
}

const ARGS: [&str; 5] = ["--form", "chunkwise", "--chunk", "3", "--backward"];

#[test]
fn reference_device_writes_the_rounded_reference_backward() {
    let p = problem();
    let (_dir, input, out) = workspace();
    write_input(&input, &inputs(&p));
    let got = run_ok(&input, &out, &ARGS);
    let w = want(&p, &p.d_o.values, false);
    assert_exact(&got["dq"], Dtype::F32, &w.dq, "dq");
    assert_exact(&got["dk"], Dtype::F32, &w.dk, "dk");
    assert_exact(&got["dv"], Dtype::F32, &w.dv, "dv");
    assert_exact(&got["dh0"], Dtype::F32, &w.dh0, "dh0");
    assert_exact(&got["dlog_gamma"], Dtype::F32, &w.dlog_gamma, "dlog_gamma");
    assert!(got.contains_key("o") && got.contains_key("ht"));
}

#[test]
fn cpu_device_matches_the_reference_backward() {
    let p = problem();
    let (_dir, input, out) = workspace();
    write_input(&input, &inputs(&p));
    let mut args = ARGS.to_vec();
    args.extend(["--device", "cpu"]);
    let got = run_ok(&input, &out, &args);
    let w = want(&p, &p.d_o.values, false);
    for (name, t) in [("dq", &w.dq), ("dk", &w.dk), ("dv", &w.dv), ("dh0", &w.dh0)] {
        let e = reference::max_rel_diff(f32_values(&got[name]).data(), t.data());
        assert!(e <= 1e-5, "{name}: {e:e}");
    }
    let bound = want(&p, &p.d_o.values, true).dlog_gamma;
    let g = f32_values(&got["dlog_gamma"]);
    assert_eq!(g.shape(), &[DIMS.2]);
    for ((g, w), b) in g.data().iter().zip(w.dlog_gamma.data()).zip(bound.data()) {
        assert!(
            (g - w).abs() <= 1e-5 * b,
            "dlog_gamma {g} vs {w} (Σ|terms| {b})"
        );
    }
}

#[test]
fn the_epilogue_gradient_flows_through_its_backward() {
    let p = problem();
    let (b, t, h, _, dv) = DIMS;
    let mut rng = SplitMix64::new(99);
    let dy = random("dy", Dtype::F32, &[b, t, h, dv], &mut rng);
    let g = random("g", Dtype::F32, &[b, t, h, dv], &mut rng);
    let (_dir, input, out) = workspace();
    let mut files = inputs(&p);
    files.retain(|t| t.name != "do");
    files.extend([dy.tensor.clone(), g.tensor.clone()]);
    write_input(&input, &files);
    let got = run_ok(&input, &out, &ARGS);
    let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let (o, _) = reference::chunkwise(
        &p.q.values,
        &p.k.values,
        &p.v.values,
        &params,
        3,
        Some(&p.h0.values),
    )
    .unwrap();
    let e = reference::msr_epilogue_backward(&o, &g.values, 1e-6, &dy.values).unwrap();
    assert_exact(&got["dg"], Dtype::F32, &e.dg, "dg");
    let w = want(&p, &e.d_o, false);
    assert_exact(&got["dq"], Dtype::F32, &w.dq, "dq");
    assert_exact(&got["dlog_gamma"], Dtype::F32, &w.dlog_gamma, "dlog_gamma");
}

#[test]
fn gpu_devices_and_missing_gradients_are_one_line_errors() {
    let p = problem();
    let (_dir, input, out) = workspace();
    write_input(&input, &inputs(&p));
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["run", "--input", i, "--output", o];
    args.extend(ARGS);
    let mut files = inputs(&p);
    files.retain(|t| t.name != "do");
    write_input(&input, &files);
    let r = retention(&args);
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(err.contains("`do`"), "{err}");
    assert!(!out.exists(), "nothing is written on failure");
}

/// A packed batch (lengths 3, 0, 4; per-sequence h0 and dht) through the recurrent form (and,
/// on the emulated device, the chunkwise form at C = 3), and the parallel form of a dense
/// batch: the CPU and emulated devices' gradients equal the reference device's within the
/// f32 tolerance (1e-5 max relative; d log γ 1e-4 relative, both runs of one file).
#[test]
fn varlen_and_parallel_agree_between_cpu_and_reference() {
    let (t, h, dk, dv, n) = (7, 2, 8, 4, 3);
    let mut rng = SplitMix64::new(23);
    let dt = Dtype::F32;
    let bounds: Vec<u8> = [0i64, 3, 3, 7]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut files: Vec<common::Tensor> = [
        ("q", vec![1, t, h, dk]),
        ("k", vec![1, t, h, dk]),
        ("v", vec![1, t, h, dv]),
        ("do", vec![1, t, h, dv]),
        ("h0", vec![n, h, dk, dv]),
        ("dht", vec![n, h, dk, dv]),
    ]
    .iter()
    .map(|(name, shape)| random(name, dt, shape, &mut rng).tensor)
    .collect();
    files.push(common::Tensor::new(
        "cu_seqlens",
        safetensors::Dtype::I64,
        &[4],
        bounds,
    ));
    let dense: Vec<common::Tensor> = files[..4].to_vec();
    let cases = [
        (files, ["--form", "recurrent"]),
        (dense, ["--form", "parallel"]),
    ];
    for (tensors, form) in cases {
        let (_dir, input, out) = workspace();
        write_input(&input, &tensors);
        let mut args = form.to_vec();
        args.push("--backward");
        let want = run_ok(&input, &out, &args);
        let mut runs = vec![(args.clone(), "cpu")];
        if form[1] == "recurrent" {
            runs.push((args.clone(), "emulated"));
            let chunkwise = ["--form", "chunkwise", "--chunk", "3", "--backward"];
            runs.push((chunkwise.to_vec(), "emulated"));
        }
        for (mut args, device) in runs {
            args.extend(["--device", device]);
            let got = run_ok(&input, &out, &args);
            let mut names = vec!["dq", "dk", "dv", "dlog_gamma"];
            if form[1] == "recurrent" {
                names.push("dh0");
            } else {
                assert!(!got.contains_key("dh0") && !got.contains_key("ht"));
            }
            for name in names {
                let (g, w) = (f32_values(&got[name]), f32_values(&want[name]));
                assert_eq!(g.shape(), w.shape(), "{args:?} {name}");
                let tol = if name == "dlog_gamma" { 1e-4 } else { 1e-5 };
                let e = reference::max_rel_diff(g.data(), w.data());
                assert!(e <= tol, "{args:?} {name}: {e:e}");
            }
        }
    }
}

/// One emulated-vs-reference case: `form` over a random problem in `dtype` (chunkwise and
/// recurrent with h0 and dht, chunkwise at C = 3 ∤ T = 7; parallel without), optionally
/// through the epilogue.
fn emulated_case(form: &str, dtype: Dtype, epilogue: bool) {
    let (b, t, h, dk, dv) = DIMS;
    let mut rng = SplitMix64::new(41);
    let chunkwise = form != "parallel";
    let mut shapes = vec![
        ("q", [b, t, h, dk]),
        ("k", [b, t, h, dk]),
        ("v", [b, t, h, dv]),
    ];
    if epilogue {
        shapes.extend([("dy", [b, t, h, dv]), ("g", [b, t, h, dv])]);
    } else {
        shapes.push(("do", [b, t, h, dv]));
    }
    if chunkwise {
        shapes.extend([("h0", [b, h, dk, dv]), ("dht", [b, h, dk, dv])]);
    }
    let stored: Vec<Stored> = shapes
        .iter()
        .map(|(name, shape)| {
            let dt = if matches!(*name, "h0" | "dht") {
                Dtype::F32
            } else {
                dtype
            };
            random(name, dt, shape, &mut rng)
        })
        .collect();
    let (_dir, input, out) = workspace();
    write_input(
        &input,
        &stored.iter().map(|s| s.tensor.clone()).collect::<Vec<_>>(),
    );
    let mut args = vec!["--form", form, "--chunk", "3", "--backward"];
    let want = run_ok(&input, &out, &args);
    args.extend(["--device", "emulated"]);
    let got = run_ok(&input, &out, &args);
    let case = format!("{form} {dtype:?} epilogue={epilogue}");
    let mut names = vec!["o", "dq", "dk", "dv"];
    if chunkwise {
        names.extend(["ht", "dh0"]);
    }
    if epilogue {
        names.push("dg");
    }
    for name in names {
        let dt = if matches!(name, "ht" | "dh0") {
            Dtype::F32
        } else {
            dtype
        };
        let (g, w) = (
            tensor_values(&got[name], dt),
            tensor_values(&want[name], dt),
        );
        assert_eq!(g.shape(), w.shape(), "{case} {name}");
        let (e, tol) = match dtype {
            Dtype::F32 => (reference::max_rel_diff(g.data(), w.data()), 1e-5),
            _ => (reference::rel_rmse(g.data(), w.data()), 5e-3),
        };
        assert!(e <= tol, "{case} {name}: {e:e} > {tol:e}");
        println!("{case} {name}: {e:.2e} (≤ {tol:.0e})");
    }
    // d log γ against Σ|terms|: the reference backward on |inputs| and |do| (through the
    // epilogue, do is its backward at the reference forward's o).
    let (g, w) = (
        f32_values(&got["dlog_gamma"]),
        f32_values(&want["dlog_gamma"]),
    );
    let val = |n: &str| &stored.iter().find(|s| s.tensor.name == n).unwrap().values;
    let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let d_o = if epilogue {
        let (q, k, v) = (val("q"), val("k"), val("v"));
        let (o, _) = reference::chunkwise(q, k, v, &params, 3, Some(val("h0"))).unwrap();
        reference::msr_epilogue_backward(&o, val("g"), 1e-6, val("dy"))
            .unwrap()
            .d_o
    } else {
        val("do").clone()
    };
    let (q, k, v, d_o) = (abs(val("q")), abs(val("k")), abs(val("v")), abs(&d_o));
    let bound = if chunkwise {
        let (h0, d_ht) = (abs(val("h0")), abs(val("dht")));
        reference::chunkwise_backward(&q, &k, &v, &params, 3, Some(&h0), &d_o, Some(&d_ht))
            .unwrap()
            .dlog_gamma
    } else {
        reference::parallel_backward(&q, &k, &v, &params, &d_o)
            .unwrap()
            .dlog_gamma
    };
    for ((g, w), b) in g.data().iter().zip(w.data()).zip(bound.data()) {
        assert!(
            (g - w).abs() <= 1e-5 * b,
            "{case} dlog_gamma {g} vs {w} (Σ|terms| {b})"
        );
    }
}

#[test]
fn emulated_chunkwise_backward_matches_the_reference_device() {
    emulated_case("chunkwise", Dtype::F32, false);
    emulated_case("chunkwise", Dtype::Bf16, false);
}

#[test]
fn emulated_recurrent_backward_matches_the_reference_device() {
    emulated_case("recurrent", Dtype::F32, false);
    emulated_case("recurrent", Dtype::Bf16, false);
}

#[test]
fn emulated_parallel_backward_matches_the_reference_device() {
    emulated_case("parallel", Dtype::F32, false);
    emulated_case("parallel", Dtype::Bf16, false);
}

#[test]
fn emulated_epilogue_backward_matches_the_reference_device() {
    emulated_case("chunkwise", Dtype::F32, true);
}
