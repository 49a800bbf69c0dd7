//! Helpers the C ABI tests share: descriptors over Rust buffers, inputs, the last message.
#![allow(dead_code)]

use std::ffi::CStr;
use std::ptr;

use retention::{Device, Element, Gammas, HostTensor, Retention, RetentionParams};
use retention_capi::{
    RetentionDtype, RetentionHandle, RetentionStatus, RetentionTensor, retention_create,
    retention_last_error,
};

/// The C dtype code of `T`.
pub fn dtype_of<T: Element>() -> i32 {
    match T::DTYPE {
        Some(retention::Dtype::F16) => RetentionDtype::F16 as i32,
        Some(retention::Dtype::Bf16) => RetentionDtype::Bf16 as i32,
        _ => RetentionDtype::F32 as i32,
    }
}

/// A dense row-major descriptor of (a prefix of) `p` with shape `s` (rank = `s.len()` ≤ 4).
pub fn desc<T: Element>(p: &mut [T], s: &[usize]) -> RetentionTensor {
    let mut shape = [0i64; 4];
    let mut strides = [0i64; 4];
    let mut acc = 1i64;
    for i in (0..s.len()).rev() {
        shape[i] = s[i] as i64;
        strides[i] = acc;
        acc *= s[i] as i64;
    }
    assert!(acc as usize <= p.len(), "descriptor larger than its buffer");
    RetentionTensor {
        data: p.as_mut_ptr().cast(),
        dtype: dtype_of::<T>(),
        ndim: s.len() as i32,
        shape,
        strides,
    }
}

/// A deterministic ramp in [-2/3, 1).
pub fn ramp(n: usize, m: usize) -> Vec<f32> {
    (0..n).map(|i| ((i % m) as f32 - 2.0) / 3.0).collect()
}

/// A host tensor of `T` from a ramp.
pub fn input<T: Element>(shape: &[usize], m: usize) -> HostTensor<T> {
    let n = shape.iter().product();
    let f: Vec<f64> = ramp(n, m).iter().map(|&x| f64::from(x)).collect();
    HostTensor::from_f64(shape.to_vec(), &f).unwrap()
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    // SAFETY: the library returns a valid NUL-terminated string until the next call.
    unsafe { CStr::from_ptr(retention_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A handle on `device` (a `RetentionDeviceKind` value) with the RetNet decays of `heads`.
pub fn create_on(device: i32, heads: u32) -> *mut RetentionHandle {
    let mut h = ptr::null_mut();
    // SAFETY: `h` is writable.
    let st = unsafe { retention_create(device, 0, heads, 0, 0.0, &raw mut h) };
    assert_eq!(st, RetentionStatus::Ok, "{}", last_error());
    h
}

/// A CPU handle.
pub fn create(heads: u32) -> *mut RetentionHandle {
    create_on(0, heads)
}

/// The facade's CPU retention with the same decays and scale as [`create`].
pub fn facade(heads: usize) -> Retention {
    Retention::new(
        &Device::Cpu,
        RetentionParams::new(Gammas::retnet(heads).unwrap(), None),
    )
    .unwrap()
}
