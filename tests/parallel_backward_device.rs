//! `Retention::parallel_backward` on `Device::Emulated` — the four GPU kernels of the
//! parallel backward run as PTX in the emulator through the runtime's launch description —
//! gives the CPU backward's gradients (`Device::Cpu`, same inputs): dq, dk, dv within the
//! forward's tolerances of each other (f32 1e-5 max relative, f16/bf16 5e-3 relative RMSE,
//! both sides rounded to the dtype) and d log γ within 1e-5 of Σ|terms| (the f64 reference
//! on |inputs|, as `tests/training_api.rs` bounds it), at odd head dims, T not a multiple of
//! the tile, a non-default scale and sharded (runtime) decays; bad shapes stay typed errors.

use half::bf16;
use retention::{
    CpuElement, Device, Element, Gammas, HostTensor, Retention, RetentionError, RetentionParams,
    reference,
};

fn input<T: Element>(shape: Vec<usize>, seed: u64) -> HostTensor<T> {
    let mut rng = retention_core::SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &rng.vec(n)).unwrap()
}

fn abs(t: &HostTensor<f64>) -> HostTensor<f64> {
    HostTensor::new(
        t.shape().to_vec(),
        t.data().iter().map(|x| x.abs()).collect(),
    )
    .unwrap()
}

fn close<T: Element>(what: &str, got: &HostTensor<T>, want: &HostTensor<T>, f32_like: bool) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64(), want.to_f64());
    assert!(
        w.data().iter().any(|&x| x != 0.0),
        "{what}: zero CPU result"
    );
    let (e, tol) = if f32_like {
        (reference::max_rel_diff(g.data(), w.data()), 1e-5)
    } else {
        (reference::rel_rmse(g.data(), w.data()), 5e-3)
    };
    assert!(e <= tol, "{what}: {e:e} > {tol:e}");
    println!("{what}: {e:.2e}");
}

/// The emulated device against the CPU on one shape `(b, t, h, k, v)`.
fn emulated_matches_cpu<T: CpuElement>(dims: (usize, usize, usize, usize, usize), f32_like: bool) {
    let (b, t, h, k, v) = dims;
    // Heads 2.. of a RetNet schedule: runtime γ on the device (a sharded head offset).
    let p = RetentionParams::new(Gammas::retnet_sharded(h, 2).unwrap(), Some(0.3));
    let (q, kk, vv, d_o) = (
        input::<T>(vec![b, t, h, k], 1),
        input::<T>(vec![b, t, h, k], 2),
        input::<T>(vec![b, t, h, v], 3),
        input::<T>(vec![b, t, h, v], 4),
    );
    let cpu = Retention::new(&Device::Cpu, p.clone()).unwrap();
    let emu = Retention::new(&Device::Emulated(kernel_gen::Arch::Sm80), p.clone()).unwrap();
    let want = cpu.parallel_backward((&q, &kk, &vv), &d_o).unwrap();
    let got = emu.parallel_backward((&q, &kk, &vv), &d_o).unwrap();
    assert!(got.dh0.is_none());
    close("dq", &got.dq, &want.dq, f32_like);
    close("dk", &got.dk, &want.dk, f32_like);
    close("dv", &got.dv, &want.dv, f32_like);
    let absolute = RetentionParams::new(p.gammas.clone(), Some(0.3));
    let bound = reference::parallel_backward(
        &abs(&q.to_f64()),
        &abs(&kk.to_f64()),
        &abs(&vv.to_f64()),
        &absolute,
        &abs(&d_o.to_f64()),
    )
    .unwrap();
    let pairs = got.dlog_gamma.data().iter().zip(want.dlog_gamma.data());
    for ((g, w), bound) in pairs.zip(bound.dlog_gamma.data()) {
        let e = (f64::from(*g) - f64::from(*w)).abs();
        assert!(
            e <= 1e-5 * bound,
            "dlog_gamma: {g} vs CPU {w} (Σ|terms| {bound})"
        );
    }
}

#[test]
fn emulated_parallel_backward_matches_the_cpu_in_f32() {
    emulated_matches_cpu::<f32>((2, 37, 2, 60, 100), true);
}

#[test]
fn emulated_parallel_backward_matches_the_cpu_in_bf16() {
    emulated_matches_cpu::<bf16>((1, 45, 2, 64, 128), false);
}

#[test]
fn emulated_parallel_backward_checks_shapes() {
    let p = RetentionParams::new(Gammas::retnet(2).unwrap(), None);
    let emu = Retention::new(&Device::Emulated(kernel_gen::Arch::Sm80), p).unwrap();
    let q = input::<f32>(vec![1, 6, 2, 8], 1);
    let v = input::<f32>(vec![1, 6, 2, 4], 3);
    let short_do = input::<f32>(vec![1, 5, 2, 4], 9);
    let err = emu.parallel_backward((&q, &q, &v), &short_do);
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { ref tensor, .. }) if tensor == "d_o"),
        "{err:?}"
    );
}
