//! CPU MultiScaleRetention epilogue against the f64 reference, every dtype, eps 0 and > 0,
//! including an all-zero head and raw outputs far outside the f16 range.

#[macro_use]
mod cpu_support;

use cpu_support::{assert_matches, random};
use half::f16;
use retention_core::HostTensor;
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference;

fn epilogue<T: CpuElement>() {
    let shape = [2usize, 5, 3, 24];
    let mut o: HostTensor<T> = random(71, &shape);
    let g: HostTensor<T> = HostTensor::from_f64(
        shape.to_vec(),
        &random::<f64>(72, &shape)
            .data()
            .iter()
            .map(|x| 6.0 * x)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    // One all-zero head (token 0, head 1): must normalise to 0, not NaN.
    o.data_mut()[24..48].fill(T::default());
    for eps in [0.0, 1e-5, 0.5] {
        let out = cpu::msr_epilogue(&o, &g, eps).unwrap();
        let want = reference::msr_epilogue(&o.to_f64(), &g.to_f64(), eps).unwrap();
        assert_matches(&format!("epilogue eps {eps}"), &out, &want);
        assert!(out.data()[24..48].iter().all(|x| x.to_f64() == 0.0));
    }
}

#[test]
fn epilogue_matches_reference_every_dtype() {
    for_each_dtype!(epilogue);
}

#[test]
fn epilogue_narrows_large_raw_outputs_safely_to_f16() {
    // Raw retention in f32 can exceed f16's 65504; normalising first keeps the result finite.
    let shape = [1usize, 2, 2, 16];
    let o32: HostTensor<f32> = HostTensor::from_f64(
        shape.to_vec(),
        &random::<f64>(73, &shape)
            .data()
            .iter()
            .map(|x| 1e6 * x)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let g32: HostTensor<f32> = random(74, &shape);
    let out = cpu::msr_epilogue(&o32, &g32, 0.0).unwrap();
    let as_f16: HostTensor<f16> = out.cast();
    assert!(as_f16.data().iter().all(|x| x.is_finite()));
    let want = reference::msr_epilogue(&o32.to_f64(), &g32.to_f64(), 0.0).unwrap();
    assert_matches("large raw outputs", &out, &want);
}
