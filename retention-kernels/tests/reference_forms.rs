//! The oracle's own proof: the three forms of ARCHITECTURE §1 agree, carry state, are causal,
//! handle variable-length batches, and survive very long sequences.

mod common;

use common::{assert_close, concat_t, qkv, slice_h, slice_t, state};
use proptest::prelude::*;
use retention_core::{CuSeqlens, Gammas, HostTensor, SplitMix64};
use retention_kernels::reference::{
    self, RetentionParams, chunkwise, chunkwise_varlen, decay, decode_step, parallel, recurrent,
    recurrent_varlen,
};

const TOL: f64 = 1e-12;

fn params(h: usize) -> RetentionParams {
    RetentionParams::new(Gammas::retnet(h).unwrap(), None)
}

#[test]
fn parallel_recurrent_chunkwise_agree() {
    for &t in &[1usize, 37, 130] {
        for &(h, k, v) in &[(1usize, 3usize, 5usize), (2, 4, 2), (3, 8, 6)] {
            let dims = (2, t, h, k, v);
            let (q, kk, vv) = qkv(t as u64 * 31 + h as u64, dims);
            let p = params(h);
            let o_par = parallel(&q, &kk, &vv, &p).unwrap();
            let (o_rec, ht_rec) = recurrent(&q, &kk, &vv, &p, None).unwrap();
            assert_close("recurrent vs parallel", o_rec.data(), o_par.data(), TOL);
            let h0 = state(7, 2, h, k, v);
            let (o_rec0, ht_rec0) = recurrent(&q, &kk, &vv, &p, Some(&h0)).unwrap();
            for c in [1, 2, 3, 16, 64, t, t + 5] {
                let what = format!("T={t} H={h} K={k} V={v} C={c}");
                let (o_ch, ht_ch) = chunkwise(&q, &kk, &vv, &p, c, None).unwrap();
                assert_close(&format!("{what} o"), o_ch.data(), o_par.data(), TOL);
                assert_close(&format!("{what} ht"), ht_ch.data(), ht_rec.data(), TOL);
                let (o_ch0, ht_ch0) = chunkwise(&q, &kk, &vv, &p, c, Some(&h0)).unwrap();
                assert_close(
                    &format!("{what} o with H0"),
                    o_ch0.data(),
                    o_rec0.data(),
                    TOL,
                );
                assert_close(
                    &format!("{what} ht with H0"),
                    ht_ch0.data(),
                    ht_rec0.data(),
                    TOL,
                );
            }
        }
    }
}

#[test]
fn non_default_scale_is_applied_exactly_once() {
    let (q, kk, vv) = qkv(3, (1, 9, 2, 4, 3));
    let base = parallel(
        &q,
        &kk,
        &vv,
        &RetentionParams::new(Gammas::retnet(2).unwrap(), Some(1.0)),
    )
    .unwrap();
    let scaled = parallel(
        &q,
        &kk,
        &vv,
        &RetentionParams::new(Gammas::retnet(2).unwrap(), Some(0.3)),
    )
    .unwrap();
    let expect: Vec<f64> = base.data().iter().map(|x| 0.3 * x).collect();
    assert_close("scale 0.3", scaled.data(), &expect, TOL);
    let (o_ch, _) = chunkwise(
        &q,
        &kk,
        &vv,
        &RetentionParams::new(Gammas::retnet(2).unwrap(), Some(0.3)),
        4,
        None,
    )
    .unwrap();
    assert_close("chunkwise scale 0.3", o_ch.data(), &expect, TOL);
    // The default is K^-1/2 = 0.5 for K = 4.
    let dflt = parallel(&q, &kk, &vv, &params(2)).unwrap();
    let half: Vec<f64> = base.data().iter().map(|x| 0.5 * x).collect();
    assert_close("default scale", dflt.data(), &half, TOL);
}

#[test]
fn state_carries_over_between_calls() {
    let (t, h, k, v, c) = (37, 2, 4, 3, 8);
    let (q, kk, vv) = qkv(11, (2, t, h, k, v));
    let p = params(h);
    let h0 = state(5, 2, h, k, v);
    let (o_full, ht_full) = chunkwise(&q, &kk, &vv, &p, c, Some(&h0)).unwrap();
    // split points: 1, mid-chunk, a chunk boundary, T-1
    for split in [1, 5, 16, t - 1] {
        let (q1, k1, v1) = (
            slice_t(&q, 0..split),
            slice_t(&kk, 0..split),
            slice_t(&vv, 0..split),
        );
        let (q2, k2, v2) = (
            slice_t(&q, split..t),
            slice_t(&kk, split..t),
            slice_t(&vv, split..t),
        );
        let (o1, ht1) = chunkwise(&q1, &k1, &v1, &p, c, Some(&h0)).unwrap();
        let (o2, ht2) = chunkwise(&q2, &k2, &v2, &p, c, Some(&ht1)).unwrap();
        assert_close(
            &format!("chunkwise split {split} o"),
            concat_t(&o1, &o2).data(),
            o_full.data(),
            TOL,
        );
        assert_close(
            &format!("chunkwise split {split} ht"),
            ht2.data(),
            ht_full.data(),
            TOL,
        );
        let (r1, rt1) = recurrent(&q1, &k1, &v1, &p, Some(&h0)).unwrap();
        let (r2, rt2) = recurrent(&q2, &k2, &v2, &p, Some(&rt1)).unwrap();
        assert_close(
            &format!("recurrent split {split} o"),
            concat_t(&r1, &r2).data(),
            o_full.data(),
            TOL,
        );
        assert_close(
            &format!("recurrent split {split} ht"),
            rt2.data(),
            ht_full.data(),
            TOL,
        );
    }
}

#[test]
fn outputs_are_causal_bit_for_bit() {
    let (t, h, k, v) = (20, 2, 3, 4);
    let (q, kk, vv) = qkv(21, (1, t, h, k, v));
    let p = params(h);
    let run_all = |q: &HostTensor<f64>, kk: &HostTensor<f64>, vv: &HostTensor<f64>| {
        vec![
            parallel(q, kk, vv, &p).unwrap(),
            recurrent(q, kk, vv, &p, None).unwrap().0,
            chunkwise(q, kk, vv, &p, 6, None).unwrap().0,
        ]
    };
    let base = run_all(&q, &kk, &vv);
    for t_pert in [1, 7, 12, 19] {
        let perturb = |x: &HostTensor<f64>| {
            let mut y = x.clone();
            let d = x.shape()[2] * x.shape()[3];
            for e in &mut y.data_mut()[t_pert * d..(t_pert + 1) * d] {
                *e += 10.0;
            }
            y
        };
        let out = run_all(&perturb(&q), &perturb(&kk), &perturb(&vv));
        for (form, (a, b)) in out.iter().zip(&base).enumerate() {
            let row = h * v;
            assert_eq!(
                &a.data()[..t_pert * row],
                &b.data()[..t_pert * row],
                "form {form}: perturbing t={t_pert} changed an earlier output"
            );
            assert_ne!(
                &a.data()[t_pert * row..],
                &b.data()[t_pert * row..],
                "form {form}"
            );
        }
    }
}

#[test]
fn varlen_equals_per_sequence_loop() {
    let (h, k, v) = (2, 3, 5);
    let bounds = vec![0usize, 7, 7, 20, 33];
    let total = 33;
    let (q, kk, vv) = qkv(41, (1, total, h, k, v));
    let cu = CuSeqlens::new(bounds.clone(), total).unwrap();
    let p = params(h);
    let n = cu.num_seqs();
    let h0 = state(9, n, h, k, v);
    let (o_rec, ht_rec) = recurrent_varlen(&q, &kk, &vv, &cu, &p, Some(&h0)).unwrap();
    for c in [1, 4, 16, 40] {
        let (o_ch, ht_ch) = chunkwise_varlen(&q, &kk, &vv, &cu, &p, c, Some(&h0)).unwrap();
        assert_close(&format!("varlen C={c} o"), o_ch.data(), o_rec.data(), TOL);
        assert_close(
            &format!("varlen C={c} ht"),
            ht_ch.data(),
            ht_rec.data(),
            TOL,
        );
        for seq in 0..n {
            let r = cu.range(seq);
            let s0 = slice_h(&h0, 0..h, true);
            let s0 = HostTensor::new(
                vec![1, h, k, v],
                s0.data()[seq * h * k * v..(seq + 1) * h * k * v].to_vec(),
            )
            .unwrap();
            if r.is_empty() {
                // An empty sequence leaves its state untouched.
                assert_eq!(
                    &ht_ch.data()[seq * h * k * v..(seq + 1) * h * k * v],
                    s0.data()
                );
                continue;
            }
            let (o1, ht1) = chunkwise(
                &slice_t(&q, r.clone()),
                &slice_t(&kk, r.clone()),
                &slice_t(&vv, r.clone()),
                &p,
                c,
                Some(&s0),
            )
            .unwrap();
            let row = h * v;
            assert_eq!(
                &o_ch.data()[r.start * row..r.end * row],
                o1.data(),
                "seq {seq} C={c}"
            );
            assert_eq!(
                &ht_ch.data()[seq * h * k * v..(seq + 1) * h * k * v],
                ht1.data()
            );
        }
    }
}

#[test]
fn single_token_closed_form() {
    let (h, k, v) = (2, 3, 2);
    let (q, kk, vv) = qkv(51, (1, 1, h, k, v));
    let h0 = state(3, 1, h, k, v);
    let scale = 0.7;
    let p = RetentionParams::new(Gammas::retnet(h).unwrap(), Some(scale));
    let (o, ht) = chunkwise(&q, &kk, &vv, &p, 4, Some(&h0)).unwrap();
    for hi in 0..h {
        let g = p.gammas.get(hi);
        for j in 0..v {
            let mut acc = 0.0;
            for i in 0..k {
                let s = g * h0.data()[(hi * k + i) * v + j]
                    + kk.data()[hi * k + i] * vv.data()[hi * v + j];
                assert!((ht.data()[(hi * k + i) * v + j] - s).abs() < 1e-15);
                acc += q.data()[hi * k + i] * s;
            }
            assert!((o.data()[hi * v + j] - scale * acc).abs() < 1e-14);
        }
    }
}

#[test]
fn sharded_heads_use_global_gammas() {
    let (t, h, k, v) = (12, 8, 3, 2);
    let (q, kk, vv) = qkv(61, (1, t, h, k, v));
    let full = parallel(&q, &kk, &vv, &params(h)).unwrap();
    let mut shards = Vec::new();
    for (lo, hi) in [(0, 4), (4, 8)] {
        let p = RetentionParams::new(Gammas::retnet_sharded(hi - lo, lo).unwrap(), None);
        let o = parallel(
            &slice_h(&q, lo..hi, false),
            &slice_h(&kk, lo..hi, false),
            &slice_h(&vv, lo..hi, false),
            &p,
        )
        .unwrap();
        shards.push(o);
    }
    for (idx, (lo, hi)) in [(0, 4), (4, 8)].into_iter().enumerate() {
        assert_eq!(
            slice_h(&full, lo..hi, false).data(),
            shards[idx].data(),
            "shard {idx}"
        );
    }
    // The fla bug (PITFALLS #9): local-head gammas on the second shard give other outputs.
    let wrong = parallel(
        &slice_h(&q, 4..8, false),
        &slice_h(&kk, 4..8, false),
        &slice_h(&vv, 4..8, false),
        &params(4),
    )
    .unwrap();
    assert!(reference::max_abs_diff(wrong.data(), shards[1].data()) > 1e-3);
}

#[test]
fn decode_steps_equal_recurrent_with_scrambled_slots() {
    let (n, t, h, k, v) = (3, 5, 2, 4, 3);
    let (q, kk, vv) = qkv(71, (n, t, h, k, v));
    let p = params(h);
    let h0 = state(13, n, h, k, v);
    let (o_ref, ht_ref) = recurrent(&q, &kk, &vv, &p, Some(&h0)).unwrap();
    // Rows live in slots 4, 0, 2 of a pool of 6; other slots must be untouched.
    let slots = [4usize, 0, 2];
    let mut pool = state(99, 6, h, k, v);
    let untouched = pool.clone();
    let sl = h * k * v;
    for (row, &slot) in slots.iter().enumerate() {
        pool.data_mut()[slot * sl..(slot + 1) * sl]
            .copy_from_slice(&h0.data()[row * sl..(row + 1) * sl]);
    }
    for step in 0..t {
        let take = |x: &HostTensor<f64>| {
            let d = h * x.shape()[3];
            let mut data = Vec::new();
            for row in 0..n {
                let off = (row * t + step) * d;
                data.extend_from_slice(&x.data()[off..off + d]);
            }
            HostTensor::new(vec![n, h, x.shape()[3]], data).unwrap()
        };
        let o = decode_step(&take(&q), &take(&kk), &take(&vv), &mut pool, &slots, &p).unwrap();
        for row in 0..n {
            let off = (row * t + step) * h * v;
            assert_close(
                "decode o",
                &o.data()[row * h * v..(row + 1) * h * v],
                &o_ref.data()[off..off + h * v],
                TOL,
            );
        }
    }
    for (row, &slot) in slots.iter().enumerate() {
        assert_close(
            "decode state",
            &pool.data()[slot * sl..(slot + 1) * sl],
            &ht_ref.data()[row * sl..(row + 1) * sl],
            TOL,
        );
    }
    for free in [1usize, 3, 5] {
        assert_eq!(
            &pool.data()[free * sl..(free + 1) * sl],
            &untouched.data()[free * sl..(free + 1) * sl]
        );
    }
}

/// PITFALLS #12: prefill chunkwise, then decode 2+ chunk lengths token by token, equals one
/// parallel pass over the whole sequence.
#[test]
fn decode_continues_a_chunkwise_prefill() {
    let (t_pre, c, t_dec, h, k, v) = (21, 8, 19, 3, 4, 4);
    let t = t_pre + t_dec;
    let (q, kk, vv) = qkv(81, (1, t, h, k, v));
    let p = params(h);
    let full = parallel(&q, &kk, &vv, &p).unwrap();
    let (o_pre, ht) = chunkwise(
        &slice_t(&q, 0..t_pre),
        &slice_t(&kk, 0..t_pre),
        &slice_t(&vv, 0..t_pre),
        &p,
        c,
        None,
    )
    .unwrap();
    let mut pool = ht;
    let mut outs = o_pre.data().to_vec();
    for step in t_pre..t {
        let one = |x: &HostTensor<f64>| {
            let s = slice_t(x, step..step + 1);
            HostTensor::new(vec![1, h, x.shape()[3]], s.into_data()).unwrap()
        };
        let o = decode_step(&one(&q), &one(&kk), &one(&vv), &mut pool, &[0], &p).unwrap();
        outs.extend_from_slice(o.data());
    }
    assert_close("prefill + decode", &outs, full.data(), TOL);
}

/// PITFALLS #2: T = 65536 with the fastest and slowest retnet(16) heads: everything stays
/// finite, the slowest head still decays, and tokens older than the fastest head's f64 decay
/// horizon contribute exactly 0.
#[test]
fn long_sequence_stays_finite_and_forgets_beyond_the_horizon() {
    let all = Gammas::retnet(16).unwrap();
    let gammas = Gammas::from_list(vec![all.get(0), all.get(15)]).unwrap();
    let p = RetentionParams::new(gammas.clone(), None);
    let (t, h, k, v) = (65_536, 2, 2, 2);
    let (q, kk, vv) = qkv(91, (1, t, h, k, v));
    let (o_ch, ht_ch) = chunkwise(&q, &kk, &vv, &p, 64, None).unwrap();
    let (o_rec, ht_rec) = recurrent(&q, &kk, &vv, &p, None).unwrap();
    assert!(
        o_ch.data()
            .iter()
            .chain(ht_ch.data())
            .all(|x| x.is_finite())
    );
    assert_close("long o", o_ch.data(), o_rec.data(), 1e-10);
    assert_close("long ht", ht_ch.data(), ht_rec.data(), 1e-10);

    // Fastest head: decay(n) is exactly 0 beyond n = 23,470 in f64.
    let horizon = (0..t).find(|&n| decay(gammas.log2(0), n) == 0.0).unwrap();
    assert!((23_000..24_000).contains(&horizon), "horizon {horizon}");
    // Replace the first 1000 tokens by different values: outputs of head 0 at positions at
    // least one horizon later are bit-identical.
    let mut rng = SplitMix64::new(5);
    let mut kk2 = kk.clone();
    let mut vv2 = vv.clone();
    for e in &mut kk2.data_mut()[..1000 * h * k] {
        *e = rng.symmetric() * 3.0;
    }
    for e in &mut vv2.data_mut()[..1000 * h * v] {
        *e = rng.symmetric() * 3.0;
    }
    let (o2, _) = chunkwise(&q, &kk2, &vv2, &p, 64, None).unwrap();
    for tt in (1000 + horizon)..t {
        let off = (tt * h) * v; // head 0
        assert_eq!(
            &o2.data()[off..off + v],
            &o_ch.data()[off..off + v],
            "t={tt}"
        );
    }
    // ...and before the horizon they do differ (the test can fail).
    assert_ne!(
        &o2.data()[1000 * h * v..1000 * h * v + v],
        &o_ch.data()[1000 * h * v..1000 * h * v + v]
    );

    // Slowest head still decays over 65536 tokens: H0 = 1, zero inputs → γ^T H0.
    let zeros_qk = HostTensor::zeros(vec![1, t, h, k]);
    let zeros_v = HostTensor::zeros(vec![1, t, h, v]);
    let ones = HostTensor::new(vec![1, h, k, v], vec![1.0; h * k * v]).unwrap();
    let (_, ht) = chunkwise(&zeros_qk, &zeros_qk, &zeros_v, &p, 64, Some(&ones)).unwrap();
    let slow = ht.data()[k * v];
    let expect =
        (-(65_536.0) * 2f64.powi(-20) / std::f64::consts::LN_2 * std::f64::consts::LN_2).exp();
    assert!(
        (slow - (1.0 - 2f64.powi(-20)).powi(65_536)).abs() < 1e-12,
        "{slow}"
    );
    assert!((slow - expect).abs() < 1e-6 && slow < 0.95, "{slow}");
    assert_eq!(ht.data()[0], 0.0, "fastest head forgot H0 entirely");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn forms_agree_on_random_shapes(
        b in 1usize..3, t in 1usize..40, h in 1usize..4, k in 1usize..7, v in 1usize..7,
        c in 1usize..50, seed in any::<u64>(), with_h0 in any::<bool>(),
    ) {
        let (q, kk, vv) = qkv(seed, (b, t, h, k, v));
        let p = params(h);
        let h0 = with_h0.then(|| state(seed, b, h, k, v));
        let (o_rec, ht_rec) = recurrent(&q, &kk, &vv, &p, h0.as_ref()).unwrap();
        let (o_ch, ht_ch) = chunkwise(&q, &kk, &vv, &p, c, h0.as_ref()).unwrap();
        let scale = o_rec.data().iter().fold(1.0_f64, |m, x| m.max(x.abs()));
        prop_assert!(reference::max_abs_diff(o_ch.data(), o_rec.data()) <= TOL * scale);
        let hscale = ht_rec.data().iter().fold(1.0_f64, |m, x| m.max(x.abs()));
        prop_assert!(reference::max_abs_diff(ht_ch.data(), ht_rec.data()) <= TOL * hscale);
        if h0.is_none() {
            let o_par = parallel(&q, &kk, &vv, &p).unwrap();
            prop_assert!(reference::max_abs_diff(o_par.data(), o_rec.data()) <= TOL * scale);
        }
    }
}
