//! `Blas::linear_into` on every device: the `gemm` crate on the CPU and emulated devices'
//! host memory, cuBLAS on `Cuda(0)` where a GPU answers; out ← x·W then out ← out + x·W
//! against f64 on the dtype-rounded inputs (f32 ≤ 1e-5 max relative, f16 ≤ 5e-3 relative
//! RMSE), with no byte moved between host and device; bf16 on a host-memory device and
//! mismatched shapes are typed errors.

use half::f16;
use retention_core::{Dtype, Element, HostTensor, RetentionError, SplitMix64};
use retention_kernels::reference;
use retention_runtime::{Blas, Device, DeviceDtype, DeviceTensor, GemmWrite, MemoryPool, Stream};

mod common;
use common::devices;

fn input<T: Element>(shape: &[usize], seed: u64) -> HostTensor<T> {
    let mut rng = SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape.to_vec(), &rng.vec(n)).unwrap()
}

/// x·W (+ c) in f64: x `[m, k]`, W `[k, n]`.
fn product(x: &[f64], w: &[f64], c: Option<&[f64]>, (m, k, n): (usize, usize, usize)) -> Vec<f64> {
    let mut out = c.map_or(vec![0.0; m * n], <[f64]>::to_vec);
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] += (0..k).map(|p| x[i * k + p] * w[p * n + j]).sum::<f64>();
        }
    }
    out
}

fn one_case<T: Element>(device: &Device, tol: f64) {
    let dtype = T::DTYPE.unwrap();
    let (stream, mem) = (
        Stream::new(device).unwrap(),
        MemoryPool::on(device, None).unwrap(),
    );
    let blas = Blas::new(&stream).unwrap();
    let (m, k, n) = (6, 37, 19);
    let x = input::<T>(&[3, 2, k], 1);
    let w = input::<T>(&[k, n], 2);
    let c = input::<T>(&[3, 2, n], 3);
    let up = |h: &HostTensor<T>| DeviceTensor::upload(&mem, h, &stream).unwrap();
    let (dx, dw, mut dc) = (up(&x), up(&w), up(&c));
    let mut fresh =
        DeviceTensor::zeros(&mem, device, DeviceDtype::of::<T>().unwrap(), &[3, 2, n]).unwrap();
    let before = stream.transfers();
    blas.linear_into(&dx, &dw, &mut fresh, GemmWrite::Overwrite)
        .unwrap();
    blas.linear_into(&dx, &dw, &mut dc, GemmWrite::Accumulate)
        .unwrap();
    let moved = stream.transfers().since(&before);
    assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0));
    let (x64, w64, c64) = (x.to_f64(), w.to_f64(), c.to_f64());
    let shape = (m, k, n);
    let wants = [
        product(x64.data(), w64.data(), None, shape),
        product(x64.data(), w64.data(), Some(c64.data()), shape),
    ];
    for (got, want) in [fresh, dc].iter().zip(&wants) {
        let got = got.download::<T>(&stream).unwrap().to_f64();
        let e = match dtype {
            Dtype::F32 => reference::max_rel_diff(got.data(), want),
            _ => reference::rel_rmse(got.data(), want),
        };
        assert!(e <= tol, "{} {dtype}: error {e:e} > {tol:e}", device.name());
    }
}

#[test]
fn linear_into_matches_f64_on_every_device() {
    for device in devices() {
        one_case::<f32>(&device, 1e-5);
        one_case::<f16>(&device, 5e-3);
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    for device in [Device::Cpu, Device::from_name("emulated").unwrap()] {
        let (stream, mem) = (
            Stream::new(&device).unwrap(),
            MemoryPool::on(&device, None).unwrap(),
        );
        let blas = Blas::new(&stream).unwrap();
        let z = |dt, shape: &[usize]| DeviceTensor::zeros(&mem, &device, dt, shape).unwrap();
        let (x, w) = (z(DeviceDtype::Bf16, &[2, 4]), z(DeviceDtype::Bf16, &[4, 3]));
        let mut out = z(DeviceDtype::Bf16, &[2, 3]);
        assert!(matches!(
            blas.linear_into(&x, &w, &mut out, GemmWrite::Overwrite),
            Err(RetentionError::Unsupported { .. })
        ));
        let (x, w) = (z(DeviceDtype::F32, &[2, 4]), z(DeviceDtype::F32, &[5, 3]));
        let mut out = z(DeviceDtype::F32, &[2, 3]);
        assert!(matches!(
            blas.linear_into(&x, &w, &mut out, GemmWrite::Overwrite),
            Err(RetentionError::ShapeMismatch { .. })
        ));
    }
}
