//! The layer ops on device tensors — `Retention::rms_norm_into` (RMSNorm with a gain over the
//! model width) and `Retention::gelu_in_place` (tanh-form GELU) — with one test body run on
//! `Cpu`, `Emulated(sm_80)`, `Emulated(sm_90)` and `Cuda(0)` where a GPU answers, against an
//! f64 implementation in this file on the dtype-rounded inputs within ARCHITECTURE §4's
//! tolerances (f32 ≤ 1e-5 max relative, f16/bf16 ≤ 5e-3 relative RMSE). Widths cover the
//! vector (4 | d), pair (2 | d) and scalar lane paths and more than one lane group; GELU
//! lengths cover the vector and scalar paths with a partial last CTA. The ops move no bytes
//! between host and device, and bad arguments are typed errors.

use half::{bf16, f16};
use retention_core::{Element, HostTensor, RetentionError, SplitMix64};
use retention_kernels::cpu::CpuElement;
use retention_runtime::DeviceDtype;

mod common;
mod device_fixture;
use common::devices;
use device_fixture::{Fixture, close};

fn input<T: Element>(shape: &[usize], scale: f64, offset: f64, seed: u64) -> HostTensor<T> {
    let mut rng = SplitMix64::new(seed);
    let n = shape.iter().product();
    let data: Vec<f64> = rng.vec(n).into_iter().map(|x| x * scale + offset).collect();
    HostTensor::from_f64(shape.to_vec(), &data).unwrap()
}

/// RMSNorm with gain in f64 over rows of width `gain.len()`.
fn rms_norm_f64(x: &[f64], gain: &[f64], eps: f64) -> Vec<f64> {
    let d = gain.len();
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter().zip(gain).map(move |(v, g)| v * inv * g)
        })
        .collect()
}

/// GELU, tanh form, in f64.
fn gelu_f64(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
}

fn rms_case<T: CpuElement>(f: &Fixture, rows: usize, d: usize) {
    let dtype = T::DTYPE.unwrap();
    let shape = [rows, 1, d];
    let x = input::<T>(&shape, 4.0, 0.5, d as u64);
    let gain = input::<T>(&[d], 0.2, 1.0, 7);
    let (dx, dg) = (f.up(&x), f.up(&gain));
    let dt = DeviceDtype::of::<T>().unwrap();
    let mut y = f.zeros(dt, &shape);
    let before = f.stream.transfers();
    f.ret
        .rms_norm_into(&dx, &dg, 1e-6, &mut y, Some(&f.stream))
        .unwrap();
    let moved = f.stream.transfers().since(&before);
    assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0), "{dtype} d={d}");
    let want = rms_norm_f64(x.to_f64().data(), gain.to_f64().data(), 1e-6);
    let what = format!(
        "{} {dtype} rms_norm rows={rows} d={d}",
        f.stream.device().name()
    );
    close(&what, dtype, &f.down::<T>(&y), &want);
}

fn gelu_case<T: CpuElement>(f: &Fixture, n: usize) {
    let dtype = T::DTYPE.unwrap();
    let x = input::<T>(&[n], 12.0, 0.0, n as u64);
    let mut dx = f.up(&x);
    let before = f.stream.transfers();
    f.ret.gelu_in_place(&mut dx, Some(&f.stream)).unwrap();
    let moved = f.stream.transfers().since(&before);
    assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0), "{dtype} n={n}");
    let want: Vec<f64> = x.to_f64().data().iter().map(|&v| gelu_f64(v)).collect();
    let what = format!("{} {dtype} gelu n={n}", f.stream.device().name());
    close(&what, dtype, &f.down::<T>(&dx), &want);
}

#[test]
fn rms_norm_and_gelu_match_f64_on_every_device() {
    for device in devices() {
        let f = Fixture::new(&device, 1);
        for (rows, d) in [(5, 64), (3, 300), (6, 98), (2, 37)] {
            rms_case::<f32>(&f, rows, d);
            rms_case::<f16>(&f, rows, d);
            rms_case::<bf16>(&f, rows, d);
        }
        for n in [1024, 1500, 1030, 7] {
            gelu_case::<f32>(&f, n);
            gelu_case::<f16>(&f, n);
            gelu_case::<bf16>(&f, n);
        }
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    for device in devices() {
        let f = Fixture::new(&device, 1);
        let x = f.up(&input::<f32>(&[2, 16], 1.0, 0.0, 1));
        let gain = f.up(&input::<f32>(&[16], 1.0, 0.0, 2));
        let short_gain = f.up(&input::<f32>(&[8], 1.0, 0.0, 3));
        let zeros = |dt, shape: &[usize]| f.zeros(dt, shape);
        let mut out = zeros(DeviceDtype::F32, &[2, 16]);
        let mut out_f16 = zeros(DeviceDtype::F16, &[2, 16]);
        let mut ints = zeros(DeviceDtype::U32, &[4]);
        let s = Some(&f.stream);
        let r = &f.ret;
        assert!(matches!(
            r.rms_norm_into(&x, &short_gain, 1e-6, &mut out, s),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            r.rms_norm_into(&x, &gain, 1e-6, &mut out_f16, s),
            Err(RetentionError::DtypeMismatch { .. })
        ));
        assert!(matches!(
            r.rms_norm_into(&x, &gain, -1.0, &mut out, s),
            Err(RetentionError::Unsupported { .. })
        ));
        assert!(matches!(
            r.gelu_in_place(&mut ints, s),
            Err(RetentionError::DtypeMismatch { .. })
        ));
    }
}
