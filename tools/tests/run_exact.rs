//! `retention run` writes the f64 reference rounded once to the output dtype: every form,
//! every input dtype, every flag that changes the math (chunk, scale, γ, head offset).

mod common;

use common::{
    assert_exact, f32_values, random, read_metadata, run_ok, slice_heads, workspace, write_input,
};
use retention_core::{Dtype, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{RetentionParams, chunkwise, parallel, recurrent};
use safetensors::Dtype as StDtype;

#[test]
fn every_dtype_and_form_is_the_reference_rounded_once() {
    let (b, t, h, dk, dv) = (2, 13, 3, 5, 7);
    for dtype in Dtype::ALL {
        let mut rng = SplitMix64::new(11 + dtype as u64);
        let q = random("q", dtype, &[b, t, h, dk], &mut rng);
        let k = random("k", dtype, &[b, t, h, dk], &mut rng);
        let v = random("v", dtype, &[b, t, h, dv], &mut rng);
        let h0 = random("h0", Dtype::F32, &[b, h, dk, dv], &mut rng);
        let (dir, plain, out) = workspace();
        let with_state = dir.path().join("with_h0.safetensors");
        write_input(
            &plain,
            &[q.tensor.clone(), k.tensor.clone(), v.tensor.clone()],
        );
        write_input(
            &with_state,
            &[
                q.tensor.clone(),
                k.tensor.clone(),
                v.tensor.clone(),
                h0.tensor.clone(),
            ],
        );
        let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
        let (qv, kv, vv, h0v) = (&q.values, &k.values, &v.values, &h0.values);

        let got = run_ok(
            &plain,
            &out,
            &["--form", "parallel", "--device", "reference"],
        );
        let o = parallel(qv, kv, vv, &params).unwrap();
        assert_exact(&got["o"], dtype, &o, &format!("{dtype} parallel o"));
        assert!(!got.contains_key("ht"), "parallel has no final state");

        let got = run_ok(&with_state, &out, &["--form", "recurrent"]);
        let (o, ht) = recurrent(qv, kv, vv, &params, Some(h0v)).unwrap();
        assert_exact(&got["o"], dtype, &o, &format!("{dtype} recurrent o"));
        assert_exact(
            &got["ht"],
            Dtype::F32,
            &ht,
            &format!("{dtype} recurrent ht"),
        );

        let got = run_ok(&with_state, &out, &["--form", "chunkwise", "--chunk", "4"]);
        let (o, ht) = chunkwise(qv, kv, vv, &params, 4, Some(h0v)).unwrap();
        assert_exact(&got["o"], dtype, &o, &format!("{dtype} chunkwise o"));
        assert_exact(
            &got["ht"],
            Dtype::F32,
            &ht,
            &format!("{dtype} chunkwise ht"),
        );
        assert_eq!(got["ht"].dtype, StDtype::F32);
    }
}

#[test]
fn chunk_defaults_to_64_and_the_flag_is_honoured() {
    let (b, t, h, dk, dv) = (1, 70, 2, 4, 3);
    let mut rng = SplitMix64::new(5);
    let q = random("q", Dtype::F32, &[b, t, h, dk], &mut rng);
    let k = random("k", Dtype::F32, &[b, t, h, dk], &mut rng);
    let v = random("v", Dtype::F32, &[b, t, h, dv], &mut rng);
    let (_dir, input, out) = workspace();
    write_input(&input, &[q.tensor, k.tensor, v.tensor]);
    let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);

    for (flags, chunk) in [(&[][..], 64), (&["--chunk", "3"][..], 3)] {
        let mut args = vec!["--form", "chunkwise"];
        args.extend_from_slice(flags);
        let got = run_ok(&input, &out, &args);
        let (o, ht) = chunkwise(&q.values, &k.values, &v.values, &params, chunk, None).unwrap();
        assert_exact(&got["o"], Dtype::F32, &o, &format!("C={chunk} o"));
        assert_exact(&got["ht"], Dtype::F32, &ht, &format!("C={chunk} ht"));
        let meta = read_metadata(&out);
        assert_eq!(meta["chunk"], chunk.to_string());
        assert_eq!(meta["form"], "chunkwise");
    }
}

#[test]
fn scale_and_explicit_gammas_reach_the_math() {
    let (b, t, h, dk, dv) = (2, 9, 3, 4, 5);
    let mut rng = SplitMix64::new(8);
    let q = random("q", Dtype::Bf16, &[b, t, h, dk], &mut rng);
    let k = random("k", Dtype::Bf16, &[b, t, h, dk], &mut rng);
    let v = random("v", Dtype::Bf16, &[b, t, h, dv], &mut rng);
    let h0 = random("h0", Dtype::F32, &[b, h, dk, dv], &mut rng);
    let (_dir, input, out) = workspace();
    write_input(&input, &[q.tensor, k.tensor, v.tensor, h0.tensor]);
    let got = run_ok(
        &input,
        &out,
        &[
            "--form",
            "recurrent",
            "--scale",
            "-0.37",
            "--gammas",
            "0.9, 0.5,0.999",
        ],
    );
    let params = RetentionParams::new(
        Gammas::from_list(vec![0.9, 0.5, 0.999]).unwrap(),
        Some(-0.37),
    );
    let (o, ht) = recurrent(&q.values, &k.values, &v.values, &params, Some(&h0.values)).unwrap();
    assert_exact(&got["o"], Dtype::Bf16, &o, "o");
    assert_exact(&got["ht"], Dtype::F32, &ht, "ht");
}

#[test]
fn head_offset_uses_the_global_retnet_schedule() {
    let (b, t, h, dk, dv) = (1, 40, 2, 4, 4);
    let mut rng = SplitMix64::new(3);
    let q = random("q", Dtype::F16, &[b, t, h, dk], &mut rng);
    let k = random("k", Dtype::F16, &[b, t, h, dk], &mut rng);
    let v = random("v", Dtype::F16, &[b, t, h, dv], &mut rng);
    let (_dir, input, out) = workspace();
    write_input(&input, &[q.tensor, k.tensor, v.tensor]);

    let sharded = run_ok(&input, &out, &["--form", "parallel", "--head-offset", "3"]);
    let params = RetentionParams::new(Gammas::retnet_sharded(h, 3).unwrap(), None);
    let o = parallel(&q.values, &k.values, &v.values, &params).unwrap();
    assert_exact(&sharded["o"], Dtype::F16, &o, "offset 3");

    let local = run_ok(&input, &out, &["--form", "parallel"]);
    assert_ne!(
        local["o"].bytes, sharded["o"].bytes,
        "heads 3..5 decay differently from heads 0..2"
    );
}

#[test]
fn head_shards_concatenate_to_the_unsharded_result() {
    let (b, t, h, dk, dv) = (2, 21, 4, 3, 5);
    let mut rng = SplitMix64::new(21);
    let q = random("q", Dtype::F32, &[b, t, h, dk], &mut rng);
    let k = random("k", Dtype::F32, &[b, t, h, dk], &mut rng);
    let v = random("v", Dtype::F32, &[b, t, h, dv], &mut rng);
    let h0 = random("h0", Dtype::F32, &[b, h, dk, dv], &mut rng);
    let (dir, input, out) = workspace();
    write_input(&input, &[q.tensor, k.tensor, v.tensor, h0.tensor]);
    let args = ["--form", "chunkwise", "--chunk", "8"];
    let full = run_ok(&input, &out, &args);
    let (full_o, full_ht) = (f32_values(&full["o"]), f32_values(&full["ht"]));

    for (first, offset) in [(0, "0"), (2, "2")] {
        let heads = first..first + 2;
        let shard_in = dir.path().join(format!("shard{first}.safetensors"));
        let part = |name: &str, t: &HostTensor<f64>, axis: usize| {
            let s = slice_heads(t, axis, heads.clone());
            common::store(name, Dtype::F32, s.shape(), s.data()).tensor
        };
        write_input(
            &shard_in,
            &[
                part("q", &q.values, 2),
                part("k", &k.values, 2),
                part("v", &v.values, 2),
                part("h0", &h0.values, 1),
            ],
        );
        let mut shard_args = args.to_vec();
        shard_args.extend_from_slice(&["--head-offset", offset]);
        let shard = run_ok(&shard_in, &out, &shard_args);
        assert_eq!(
            f32_values(&shard["o"]),
            slice_heads(&full_o, 2, heads.clone()),
            "o of heads {heads:?}"
        );
        assert_eq!(
            f32_values(&shard["ht"]),
            slice_heads(&full_ht, 1, heads.clone()),
            "ht of heads {heads:?}"
        );
    }
}

#[test]
fn near_ties_round_correctly_not_through_a_wider_intermediate() {
    // T = H = K = V = 1 and q = k = v = 1: o is exactly the scale, so the scale can place o
    // just beside a rounding tie of the output dtype. Rounding that ignores the low f64 bits
    // (or goes through f32) lands on the wrong side.
    let cases = [
        (
            Dtype::Bf16,
            1.0 + 2f64.powi(-8) + 2f64.powi(-40),
            1.0 + 2f64.powi(-7),
        ),
        (
            Dtype::Bf16,
            1.0 + 3.0 * 2f64.powi(-8) - 2f64.powi(-40),
            1.0 + 2f64.powi(-7),
        ),
        (
            Dtype::F16,
            1.0 + 2f64.powi(-11) + 2f64.powi(-40),
            1.0 + 2f64.powi(-10),
        ),
        (
            Dtype::F16,
            1.0 + 3.0 * 2f64.powi(-11) - 2f64.powi(-40),
            1.0 + 2f64.powi(-10),
        ),
        (
            Dtype::F32,
            1.0 + 2f64.powi(-24) + 2f64.powi(-50),
            1.0 + 2f64.powi(-23),
        ),
    ];
    for (dtype, scale, want) in cases {
        let (_dir, input, out) = workspace();
        let one = |name: &str| common::store(name, dtype, &[1, 1, 1, 1], &[1.0]).tensor;
        write_input(&input, &[one("q"), one("k"), one("v")]);
        let scale_text = format!("{scale:?}");
        assert_eq!(scale_text.parse::<f64>().unwrap(), scale);
        for form in ["parallel", "recurrent", "chunkwise"] {
            let got = run_ok(&input, &out, &["--form", form, "--scale", &scale_text]);
            let want_t = HostTensor::new(vec![1, 1, 1, 1], vec![want]).unwrap();
            let exact_t = HostTensor::new(vec![1, 1, 1, 1], vec![scale]).unwrap();
            assert_exact(
                &got["o"],
                dtype,
                &exact_t,
                &format!("{dtype} {form} oracle"),
            );
            // The oracle itself agrees with the hand-derived answer.
            assert_exact(
                &got["o"],
                dtype,
                &want_t,
                &format!("{dtype} {form} by hand"),
            );
        }
    }
}
