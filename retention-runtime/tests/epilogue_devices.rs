//! The gated MSR epilogue on device tensors — `Retention::msr_epilogue_into` and
//! `msr_epilogue_backward_into` — with one test body run on `Cpu`, `Emulated(sm_80)`,
//! `Emulated(sm_90)` and `Cuda(0)` where a GPU answers, against the f64 reference on the
//! dtype-rounded inputs within ARCHITECTURE §4's tolerances (f32 ≤ 1e-5 max relative,
//! f16/bf16 ≤ 5e-3 relative RMSE), including eps = 0 with an all-zero row (outputs 0 there).
//! The ops move no bytes between host and device, the host-tensor forms (`msr_epilogue`,
//! `msr_epilogue_backward`) give the same bits, and bad arguments are typed errors.

use half::{bf16, f16};
use kernel_gen::Arch;
use retention_core::{Element, HostTensor, RetentionError, SplitMix64};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference;
use retention_runtime::{Device, DeviceDtype, Stream};

mod common;
mod device_fixture;
use common::devices;
use device_fixture::{Fixture, close};

fn input<T: Element>(shape: &[usize], scale: f64, seed: u64) -> HostTensor<T> {
    let mut rng = SplitMix64::new(seed);
    let n = shape.iter().product();
    let data: Vec<f64> = rng.vec(n).into_iter().map(|x| x * scale).collect();
    HostTensor::from_f64(shape.to_vec(), &data).unwrap()
}

/// Forward and backward of one (dtype, V, eps) on `f`'s device; with `zero_row`, row 4 of o
/// is all zeros and its outputs must be exactly 0.
fn one_case<T: CpuElement>(f: &Fixture, v: usize, eps: f64, zero_row: bool) {
    let dtype = T::DTYPE.unwrap();
    let shape = [2, 3, 3, v]; // 18 rows: not a multiple of a CTA's 4
    let mut o = input::<T>(&shape, 3.0, 1 + v as u64);
    if zero_row {
        o.data_mut()[4 * v..5 * v].fill(T::from_f64(0.0));
    }
    let (g, dy) = (input::<T>(&shape, 6.0, 2), input::<T>(&shape, 1.0, 3));
    let (d_o, d_g, d_dy) = (f.up(&o), f.up(&g), f.up(&dy));
    let dt = DeviceDtype::of::<T>().unwrap();
    let (mut y, mut grad_o, mut grad_g) = (
        f.zeros(dt, &shape),
        f.zeros(dt, &shape),
        f.zeros(dt, &shape),
    );
    let before = f.stream.transfers();
    f.ret
        .msr_epilogue_into(&d_o, &d_g, eps, &mut y, Some(&f.stream))
        .unwrap();
    f.ret
        .msr_epilogue_backward_into(
            &d_o,
            &d_g,
            eps,
            &d_dy,
            (&mut grad_o, &mut grad_g),
            Some(&f.stream),
        )
        .unwrap();
    let moved = f.stream.transfers().since(&before);
    assert_eq!((moved.h2d_bytes, moved.d2h_bytes), (0, 0), "{dtype} V={v}");

    let (o64, g64, dy64) = (o.to_f64(), g.to_f64(), dy.to_f64());
    let want_y = reference::msr_epilogue(&o64, &g64, eps).unwrap();
    let want = reference::msr_epilogue_backward(&o64, &g64, eps, &dy64).unwrap();
    let device = f.stream.device().name();
    let what = |name: &str| format!("{device} {dtype} V={v} eps={eps} {name}");
    let got = [f.down::<T>(&y), f.down::<T>(&grad_o), f.down::<T>(&grad_g)];
    let wants = [want_y.data(), want.d_o.data(), want.dg.data()];
    for ((name, got), want) in ["y", "do", "dg"].into_iter().zip(&got).zip(wants) {
        close(&what(name), dtype, got, want);
        if zero_row {
            assert!(
                got[4 * v..5 * v].iter().all(|&x| x == 0.0),
                "{}",
                what(name)
            );
        }
    }
}

#[test]
fn epilogue_forward_and_backward_match_the_reference_on_every_device() {
    for device in devices() {
        let f = Fixture::new(&device, 3);
        for v in [60, 100] {
            one_case::<f32>(&f, v, 1e-5, false);
            one_case::<f16>(&f, v, 1e-5, false);
            one_case::<bf16>(&f, v, 1e-5, false);
        }
        one_case::<f32>(&f, 64, 0.0, true);
        one_case::<bf16>(&f, 64, 0.0, true);
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    for device in devices() {
        let f = Fixture::new(&device, 3);
        let shape = [1, 2, 2, 16];
        let o = f.up(&input::<f32>(&shape, 1.0, 1));
        let mut out = f.zeros(DeviceDtype::F32, &shape);
        let g_f16 = f.zeros(DeviceDtype::F16, &shape);
        let wrong_shape = f.zeros(DeviceDtype::F32, &[1, 2, 2, 8]);
        let rank3 = f.zeros(DeviceDtype::F32, &[2, 2, 16]);
        let r = &f.ret;
        let (mut d_o, mut d_g) = (
            f.zeros(DeviceDtype::F32, &shape),
            f.zeros(DeviceDtype::F32, &shape),
        );
        assert!(matches!(
            r.msr_epilogue_into(&o, &g_f16, 0.0, &mut out, None),
            Err(RetentionError::DtypeMismatch { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_into(&o, &wrong_shape, 0.0, &mut out, None),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_into(&rank3, &rank3, 0.0, &mut out, None),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_into(&o, &o, -1.0, &mut out, None),
            Err(RetentionError::Unsupported { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_backward_into(&o, &o, 0.0, &wrong_shape, (&mut d_o, &mut d_g), None),
            Err(RetentionError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_backward_into(&o, &o, f64::NAN, &o, (&mut d_o, &mut d_g), None),
            Err(RetentionError::Unsupported { .. })
        ));
        // A tensor of another device.
        let other = if device == Device::Cpu {
            Device::Emulated(Arch::Sm80)
        } else {
            Device::Cpu
        };
        let foreign = Fixture::new(&other, 3).up(&input::<f32>(&shape, 1.0, 2));
        assert!(matches!(
            r.msr_epilogue_into(&o, &foreign, 0.0, &mut out, None),
            Err(RetentionError::WrongDevice { .. })
        ));
        assert!(matches!(
            r.msr_epilogue_backward_into(
                &o,
                &o,
                0.0,
                &o,
                (&mut d_o, &mut d_g),
                Some(&Stream::new(&other).unwrap())
            ),
            Err(RetentionError::WrongDevice { .. })
        ));
        // V past what the GPU kernel serves is a typed error there (the CPU serves any V).
        if device != Device::Cpu {
            let wide = [1, 1, 1, 513];
            let x = f.zeros(DeviceDtype::F32, &wide);
            let mut y = f.zeros(DeviceDtype::F32, &wide);
            assert!(matches!(
                r.msr_epilogue_into(&x, &x, 0.0, &mut y, None),
                Err(RetentionError::Unsupported { .. })
            ));
        }
    }
}
