//! CPU chunkwise and varlen forward against the f64 reference: every dtype, chunk sizes 1,
//! non-divisors and > T, with and without H0, the sequence-split path, non-default scale.

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, assert_matches, assert_state, params, random_state};
use retention_core::{CuSeqlens, Gammas, HostTensor};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::{self, RetentionParams};

fn chunk_sizes_and_initial_states<T: CpuElement>() {
    // (B, T, H, K, V): odd dims exercise the vector tails; T = 37 is prime.
    let dims = (2, 37, 3, 12, 10);
    let x = Qkv::<T>::new(11, dims);
    let (q, k, v) = x.f64();
    let p = params(3, Some(0.37));
    let h0 = random_state(5, &[2, 3, 12, 10]);
    for chunk in [1usize, 4, 5, 16, 37, 64] {
        for h0 in [None, Some(&h0)] {
            let (o, ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, chunk, h0).unwrap();
            let h0_ref = h0.map(HostTensor::to_f64);
            let (o_ref, ht_ref) =
                reference::chunkwise(&q, &k, &v, &p, chunk, h0_ref.as_ref()).unwrap();
            let what = format!("chunk {chunk}, h0 {}", h0.is_some());
            assert_matches(&format!("o, {what}"), &o, &o_ref);
            assert_state(&format!("H_T, {what}"), &ht, &ht_ref);
        }
    }
}

#[test]
fn chunkwise_matches_reference_every_dtype() {
    for_each_dtype!(chunk_sizes_and_initial_states);
}

fn single_sequence_split<T: CpuElement>() {
    // B·H = 1 and T ≥ 4C: the sequence is cut into segments that run in parallel.
    let dims = (1, 200, 1, 16, 24);
    let x = Qkv::<T>::new(21, dims);
    let (q, k, v) = x.f64();
    let p = params(1, None);
    let h0 = random_state(8, &[1, 1, 16, 24]);
    for chunk in [3usize, 8, 50] {
        let (o, ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, chunk, Some(&h0)).unwrap();
        let (o_ref, ht_ref) =
            reference::chunkwise(&q, &k, &v, &p, chunk, Some(&h0.to_f64())).unwrap();
        assert_matches(&format!("split o, chunk {chunk}"), &o, &o_ref);
        assert_state(&format!("split H_T, chunk {chunk}"), &ht, &ht_ref);
    }
}

#[test]
fn long_single_head_uses_sequence_split_and_matches() {
    for_each_dtype!(single_sequence_split);
}

fn varlen_three_sequences<T: CpuElement>() {
    // Lengths 9, 1 and 30 (ΣT = 40) with H0 per sequence.
    let dims = (1, 40, 2, 8, 6);
    let x = Qkv::<T>::new(31, dims);
    let (q, k, v) = x.f64();
    let cu = CuSeqlens::new(vec![0, 9, 10, 40], 40).unwrap();
    let p = params(2, Some(1.3));
    let h0 = random_state(9, &[3, 2, 8, 6]);
    for chunk in [1usize, 4, 7, 100] {
        for h0 in [None, Some(&h0)] {
            let (o, ht) = cpu::chunkwise_varlen(&x.q, &x.k, &x.v, &cu, &p, chunk, h0).unwrap();
            let h0_ref = h0.map(HostTensor::to_f64);
            let (o_ref, ht_ref) =
                reference::chunkwise_varlen(&q, &k, &v, &cu, &p, chunk, h0_ref.as_ref()).unwrap();
            let what = format!("varlen chunk {chunk}, h0 {}", h0.is_some());
            assert_matches(&format!("o, {what}"), &o, &o_ref);
            assert_state(&format!("H_T, {what}"), &ht, &ht_ref);
        }
    }
}

#[test]
fn varlen_matches_reference_every_dtype() {
    for_each_dtype!(varlen_three_sequences);
}

#[test]
fn varlen_with_an_empty_sequence_keeps_its_state() {
    let x = Qkv::<f32>::new(41, (1, 12, 1, 4, 4));
    let cu = CuSeqlens::new(vec![0, 5, 5, 12], 12).unwrap();
    let p = params(1, None);
    let h0 = random_state(3, &[3, 1, 4, 4]);
    let (_, ht) = cpu::chunkwise_varlen(&x.q, &x.k, &x.v, &cu, &p, 4, Some(&h0)).unwrap();
    assert_eq!(
        &ht.data()[16..32],
        &h0.data()[16..32],
        "empty sequence state untouched"
    );
    let (q, k, v) = x.f64();
    let (_, ht_ref) =
        reference::chunkwise_varlen(&q, &k, &v, &cu, &p, 4, Some(&h0.to_f64())).unwrap();
    assert_state("H_T with an empty sequence", &ht, &ht_ref);
}

#[test]
fn prefill_then_decode_continues_at_the_right_position() {
    // PITFALLS #12: chunkwise prefill of 21 tokens, then 9 decode steps, equals one pass.
    let (t_pre, t_dec, h, dk, dv) = (21usize, 9usize, 2usize, 8usize, 8usize);
    let x = Qkv::<f32>::new(51, (1, t_pre + t_dec, h, dk, dv));
    let p = params(h, Some(0.5));
    let (q, k, v) = x.f64();
    let o_ref = reference::parallel(&q, &k, &v, &p).unwrap();
    let take = |t: &HostTensor<f32>, r: std::ops::Range<usize>, d: usize| {
        HostTensor::new(
            vec![1, r.len(), h, d],
            t.data()[r.start * h * d..r.end * h * d].to_vec(),
        )
        .unwrap()
    };
    let (o_pre, mut pool) = cpu::chunkwise(
        &take(&x.q, 0..t_pre, dk),
        &take(&x.k, 0..t_pre, dk),
        &take(&x.v, 0..t_pre, dv),
        &p,
        8,
        None,
    )
    .unwrap();
    let mut got = o_pre.data().to_vec();
    for t in t_pre..t_pre + t_dec {
        let row = |src: &HostTensor<f32>, d: usize| {
            HostTensor::new(
                vec![1, h, d],
                src.data()[t * h * d..(t + 1) * h * d].to_vec(),
            )
            .unwrap()
        };
        let o = cpu::decode_step(
            &row(&x.q, dk),
            &row(&x.k, dk),
            &row(&x.v, dv),
            &mut pool,
            &[0],
            &p,
        )
        .unwrap();
        got.extend_from_slice(o.data());
    }
    let got = HostTensor::new(vec![1, t_pre + t_dec, h, dv], got).unwrap();
    assert_matches("prefill + decode vs parallel", &got, &o_ref);
}

fn many_heads<T: CpuElement>() {
    // B = 1 with many heads: jobs take several heads each (they share input pages).
    let x = Qkv::<T>::new(71, (1, 70, 16, 8, 12));
    let (q, k, v) = x.f64();
    let p = params(16, None);
    let h0 = random_state(12, &[1, 16, 8, 12]);
    for chunk in [1usize, 16, 33] {
        let (o, ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, chunk, Some(&h0)).unwrap();
        let (o_ref, ht_ref) =
            reference::chunkwise(&q, &k, &v, &p, chunk, Some(&h0.to_f64())).unwrap();
        assert_matches(&format!("16 heads o, chunk {chunk}"), &o, &o_ref);
        assert_state(&format!("16 heads H_T, chunk {chunk}"), &ht, &ht_ref);
    }
}

#[test]
fn grouped_heads_match_reference_every_dtype() {
    for_each_dtype!(many_heads);
}

#[test]
fn head_sharded_gammas_concatenate_to_the_unsharded_output() {
    // PITFALLS #9: two shards of 3 heads with global-index RetNet decays give exactly the
    // columns of the 6-head problem.
    let (t, h, dk, dv) = (24usize, 6usize, 4usize, 5usize);
    let x = Qkv::<f32>::new(81, (1, t, h, dk, dv));
    let full = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
    let (o_full, _) = cpu::chunkwise(&x.q, &x.k, &x.v, &full, 5, None).unwrap();
    let heads = |src: &HostTensor<f32>, lo: usize, d: usize| {
        let data: Vec<f32> = src
            .data()
            .chunks(h * d)
            .flat_map(|tok| tok[lo * d..(lo + 3) * d].to_vec())
            .collect();
        HostTensor::new(vec![1, t, 3, d], data).unwrap()
    };
    for lo in [0usize, 3] {
        let shard = RetentionParams::new(Gammas::retnet_sharded(3, lo).unwrap(), None);
        let (o, _) = cpu::chunkwise(
            &heads(&x.q, lo, dk),
            &heads(&x.k, lo, dk),
            &heads(&x.v, lo, dv),
            &shard,
            5,
            None,
        )
        .unwrap();
        assert_eq!(
            o.data(),
            heads(&o_full, lo, dv).data(),
            "shard at head {lo}"
        );
    }
}
