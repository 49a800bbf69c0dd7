//! The attention decode step on device tensors — `Retention::kv_append_into` (one token's
//! keys and values into a head-major cache at a position) then
//! `Retention::attention_decode_into` over the cache — on `Cpu`, `Emulated(sm_80)`,
//! `Emulated(sm_90)` and `Cuda(0)` where a GPU answers, against the f64 reference
//! (`reference::attention_decode`) on the dtype-rounded inputs within ARCHITECTURE §4's
//! tolerances (f32 ≤ 1e-5 max relative, f16/bf16 ≤ 5e-3 relative RMSE). Contexts cover one
//! split and several (the combine pass and its workspace); head dims cover tails. The step
//! moves no bytes between host and device; bad arguments are typed errors.

use half::{bf16, f16};
use retention_core::{Element, HostTensor, RetentionError, SplitMix64};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference;
use retention_runtime::{Device, DeviceDtype, RowCopy};

mod common;
mod device_fixture;
use common::devices;
use device_fixture::{Fixture, close};

fn input<T: Element>(shape: &[usize], seed: u64) -> HostTensor<T> {
    let mut rng = SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape.to_vec(), &rng.vec(n)).unwrap()
}

/// Append one token at position L − 1 of an (otherwise random) cache and attend over it.
fn one_case<T: CpuElement>(
    f: &Fixture,
    (n, h, l): (usize, usize, usize),
    (dk, dv): (usize, usize),
) {
    let dtype = T::DTYPE.unwrap();
    let dt = DeviceDtype::of::<T>().unwrap();
    let q = input::<T>(&[n, h, dk], 1);
    let (k_new, v_new) = (input::<T>(&[n, h, dk], 2), input::<T>(&[n, h, dv], 3));
    let (mut kc, mut vc) = (input::<T>(&[n, h, l, dk], 4), input::<T>(&[n, h, l, dv], 5));
    let (dq, dkn, dvn) = (f.up(&q), f.up(&k_new), f.up(&v_new));
    let (mut dkc, mut dvc) = (f.up(&kc), f.up(&vc));
    let mut o = f.zeros(dt, &[n, h, dv]);
    let ws_len = (f.ret)
        .attention_workspace_floats(dtype, (n, h, l), (dk, dv))
        .unwrap();
    if l >= 1000 && *f.stream.device() != Device::Cpu {
        assert!(
            ws_len > 0,
            "a long context is split (the combine pass runs)"
        );
    }
    let mut ws = f.zeros(DeviceDtype::F32, &[ws_len.max(1)]);
    let before = f.stream.transfers();
    let s = Some(&f.stream);
    f.ret.kv_append_into(&dkn, &mut dkc, l - 1, s).unwrap();
    f.ret.kv_append_into(&dvn, &mut dvc, l - 1, s).unwrap();
    (f.ret)
        .attention_decode_into((&dq, &dkc, &dvc), None, &mut o, Some(&mut ws), s)
        .unwrap();
    let moved = f.stream.transfers().since(&before);
    assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0));

    for (cache, new, d) in [(&mut kc, &k_new, dk), (&mut vc, &v_new, dv)] {
        for (r, row) in new.data().chunks(d).enumerate() {
            let at = (r * l + l - 1) * d;
            cache.data_mut()[at..at + d].copy_from_slice(row);
        }
    }
    let what = format!(
        "{} {dtype} N={n} H={h} L={l} K={dk} V={dv}",
        f.stream.device().name()
    );
    let got_k = dkc.download::<T>(&f.stream).unwrap();
    assert!(got_k.data() == kc.data(), "{what}: k cache after append");
    let want = reference::attention_decode(&q.to_f64(), &kc.to_f64(), &vc.to_f64(), None).unwrap();
    close(&what, dtype, &f.down::<T>(&o), want.data());
}

#[test]
fn append_then_attention_decode_matches_the_reference_on_every_device() {
    for device in devices() {
        let f = Fixture::new(&device, 1);
        one_case::<f32>(&f, (2, 2, 9), (32, 32));
        one_case::<f16>(&f, (1, 2, 300), (64, 64));
        one_case::<bf16>(&f, (2, 1, 77), (36, 20));
        one_case::<f32>(&f, (1, 1, 1100), (16, 16));
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    for device in devices() {
        let f = Fixture::new(&device, 1);
        let s = Some(&f.stream);
        let rows = f.zeros(DeviceDtype::F32, &[1, 2, 8]);
        let mut cache = f.zeros(DeviceDtype::F32, &[1, 2, 4, 8]);
        assert!(matches!(
            f.ret.kv_append_into(&rows, &mut cache, 4, s),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        let copy = RowCopy {
            rows: 3,
            width: 8,
            src: (8, 0),
            dst: (8, 0),
        };
        assert!(matches!(
            f.ret.copy_rows_into(&rows, &mut cache, copy, s),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        let mut o = f.zeros(DeviceDtype::F32, &[1, 2, 8]);
        let short_v = f.zeros(DeviceDtype::F32, &[1, 2, 3, 8]);
        assert!(matches!(
            f.ret
                .attention_decode_into((&rows, &cache, &short_v), None, &mut o, None, s),
            Err(RetentionError::ShapeMismatch { .. })
        ));
    }
}
