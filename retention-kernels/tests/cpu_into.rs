//! The in-place CPU entry points (`*_into`, what the CPU device runs on caller memory): into
//! outputs pre-filled with NaN they write every element, bit-identical to the allocating
//! calls, and an output of the wrong shape is a typed shape error naming it.

#[macro_use]
mod cpu_support;

use cpu_support::{Qkv, params, random, random_state};
use retention_core::{CuSeqlens, HostTensor, RetentionError};
use retention_kernels::cpu::{self, CpuElement};

/// A tensor of `shape` whose every element is NaN (so an unwritten one shows).
fn nan<T: CpuElement>(shape: &[usize]) -> HostTensor<T> {
    HostTensor::from_f64(shape.to_vec(), &vec![f64::NAN; shape.iter().product()]).unwrap()
}

fn bits<T: CpuElement>(t: &HostTensor<T>) -> Vec<u64> {
    t.data().iter().map(|x| x.to_f64().to_bits()).collect()
}

fn assert_same<T: CpuElement>(what: &str, got: &HostTensor<T>, want: &HostTensor<T>) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    assert_eq!(bits(got), bits(want), "{what}");
}

fn assert_shape_error(what: &str, got: retention_core::Result<()>, name: &str) {
    match got {
        Err(RetentionError::ShapeMismatch { tensor, .. }) => assert_eq!(tensor, name, "{what}"),
        other => panic!("{what}: {other:?}"),
    }
}

fn every_entry_point<T: CpuElement>() {
    let (b, t, h, k, v) = (2, 37, 3, 9, 11);
    let x = Qkv::<T>::new(71, (b, t, h, k, v));
    let p = params(h, Some(0.7));

    let want = cpu::parallel(&x.q, &x.k, &x.v, &p).unwrap();
    let mut o = nan::<T>(&[b, t, h, v]);
    cpu::parallel_into(x.q.view(), x.k.view(), x.v.view(), &p, o.view_mut()).unwrap();
    assert_same("parallel", &o, &want);
    let mut short = nan::<T>(&[b, t - 1, h, v]);
    let got = cpu::parallel_into(x.q.view(), x.k.view(), x.v.view(), &p, short.view_mut());
    assert_shape_error("parallel", got, "o");

    let h0 = random_state(72, &[b, h, k, v]);
    for (chunk, h0) in [(8, Some(&h0)), (64, None), (1, Some(&h0))] {
        let (want_o, want_ht) = cpu::chunkwise(&x.q, &x.k, &x.v, &p, chunk, h0).unwrap();
        let (mut o, mut ht) = (nan::<T>(&[b, t, h, v]), nan::<f32>(&[b, h, k, v]));
        let out = (o.view_mut(), ht.view_mut());
        let h0v = h0.map(|s| s.view());
        cpu::chunkwise_into(x.q.view(), x.k.view(), x.v.view(), &p, chunk, h0v, out).unwrap();
        assert_same(&format!("chunkwise C={chunk} o"), &o, &want_o);
        assert_same(&format!("chunkwise C={chunk} ht"), &ht, &want_ht);
    }
    let (mut o, mut ht) = (nan::<T>(&[b, t, h, v]), nan::<f32>(&[b, h, v, k]));
    let out = (o.view_mut(), ht.view_mut());
    let got = cpu::chunkwise_into(x.q.view(), x.k.view(), x.v.view(), &p, 8, None, out);
    assert_shape_error("chunkwise", got, "ht");

    // Varlen: 37 packed tokens as sequences of 1, 20 and 16.
    let packed = Qkv::<T>::new(73, (1, t, h, k, v));
    let cu = CuSeqlens::new(vec![0, 1, 21, 37], t).unwrap();
    let h0 = random_state(74, &[3, h, k, v]);
    let (q, kk, vv) = (&packed.q, &packed.k, &packed.v);
    let (want_o, want_ht) = cpu::chunkwise_varlen(q, kk, vv, &cu, &p, 8, Some(&h0)).unwrap();
    let (mut o, mut ht) = (nan::<T>(&[1, t, h, v]), nan::<f32>(&[3, h, k, v]));
    let out = (o.view_mut(), ht.view_mut());
    let (qv, kv, vv) = (q.view(), kk.view(), vv.view());
    cpu::chunkwise_varlen_into(qv, kv, vv, &cu, &p, 8, Some(h0.view()), out).unwrap();
    assert_same("varlen o", &o, &want_o);
    assert_same("varlen ht", &ht, &want_ht);

    // Decode: 2 rows in slots 3 and 0 of a 4-slot pool.
    let (q1, k1, v1) = (
        random::<T>(75, &[2, h, k]),
        random::<T>(76, &[2, h, k]),
        random::<T>(77, &[2, h, v]),
    );
    let pool0 = random_state(78, &[4, h, k, v]);
    let (mut pool_a, mut pool_b) = (pool0.clone(), pool0.clone());
    let want = cpu::decode_step(&q1, &k1, &v1, &mut pool_a, &[3, 0], &p).unwrap();
    let mut o = nan::<T>(&[2, h, v]);
    let (qv, kv, vv) = (q1.view(), k1.view(), v1.view());
    let states = pool_b.data_mut();
    cpu::decode_step_into(qv, kv, vv, states, &[3, 0], &p, o.view_mut()).unwrap();
    assert_same("decode o", &o, &want);
    assert_same("decode pool", &pool_b, &pool_a);
    let mut wrong = nan::<T>(&[2, h, v + 1]);
    let states = pool_b.data_mut();
    let got = cpu::decode_step_into(qv, kv, vv, states, &[3, 0], &p, wrong.view_mut());
    assert_shape_error("decode", got, "o");
    assert_same("pool untouched by a refused step", &pool_b, &pool_a);

    // Epilogue.
    let g = random::<T>(79, &[b, t, h, v]);
    let want = cpu::msr_epilogue(&x.v, &g, 1e-6).unwrap();
    let mut y = nan::<T>(&[b, t, h, v]);
    cpu::msr_epilogue_into(x.v.view(), g.view(), 1e-6, y.view_mut()).unwrap();
    assert_same("epilogue", &y, &want);
    let mut wrong = nan::<T>(&[b, t, h, 1]);
    let got = cpu::msr_epilogue_into(x.v.view(), g.view(), 1e-6, wrong.view_mut());
    assert_shape_error("epilogue", got, "out");
}

#[test]
fn in_place_entry_points_write_every_element_and_check_output_shapes() {
    for_each_dtype!(every_entry_point);
}
