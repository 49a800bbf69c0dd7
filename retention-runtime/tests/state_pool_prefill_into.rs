//! `StatePool::prefill_into` (device tensors, no host traffic) on the emulated GPU: the same
//! o and slot state as the host-tensor `prefill` on an identical pool (exactly: the same
//! kernels), zero host↔device bytes on the stream it ran on, typed errors for misuse, and a
//! typed refusal on a CPU pool.

use kernel_gen::Arch;
use retention_core::{Gammas, HostTensor, RetentionError, SplitMix64};
use retention_kernels::reference::RetentionParams;
use retention_runtime::{Device, DeviceDtype, DeviceTensor, MemoryPool, StateConfig, StatePool};

const H: usize = 2;
const K: usize = 16;
const V: usize = 8;

fn pool_on(device: &Device) -> StatePool {
    let cfg = StateConfig {
        heads: H,
        dk: K,
        dv: V,
        params: RetentionParams::new(Gammas::retnet(H).unwrap(), None),
    };
    let memory = MemoryPool::on(device, None).unwrap();
    StatePool::new(device, &memory, &cfg, 2, 2).unwrap()
}

#[test]
fn prefill_into_equals_prefill_with_no_host_traffic() {
    let device = Device::Emulated(Arch::Sm80);
    let mut rng = SplitMix64::new(5);
    let t = 11;
    let mut rand = |shape: Vec<usize>| {
        let n = shape.iter().product();
        HostTensor::<f32>::new(shape, rng.vec(n).into_iter().map(|x| x as f32).collect()).unwrap()
    };
    let (q, k, v) = (
        rand(vec![1, t, H, K]),
        rand(vec![1, t, H, K]),
        rand(vec![1, t, H, V]),
    );

    let mut host_pool = pool_on(&device);
    let slot = host_pool.alloc().unwrap();
    let want_o = host_pool.prefill(1, slot, &q, &k, &v, 4).unwrap();
    let want_state = host_pool.snapshot(slot).unwrap();

    let mut pool = pool_on(&device);
    let slot = pool.alloc().unwrap();
    let stream = pool.stream().clone();
    let mem = MemoryPool::on(&device, None).unwrap();
    let up = |t: &HostTensor<f32>| DeviceTensor::upload(&mem, t, &stream).unwrap();
    let (dq, dk, dv) = (up(&q), up(&k), up(&v));
    let mut o = DeviceTensor::zeros(&mem, &device, DeviceDtype::F32, &[1, t, H, V]).unwrap();
    let before = stream.transfers();
    pool.prefill_into((1, slot), (&dq, &dk, &dv), &mut o, 4, None)
        .unwrap();
    let traffic = stream.transfers().since(&before);
    assert_eq!(
        (traffic.h2d_bytes, traffic.d2h_bytes),
        (0, 0),
        "host traffic"
    );
    assert_eq!(o.download::<f32>(&stream).unwrap(), want_o);
    assert_eq!(pool.snapshot(slot).unwrap().0, want_state.0);

    // One sequence only; a stale slot; chunk 0.
    let two = DeviceTensor::zeros(&mem, &device, DeviceDtype::F32, &[2, t, H, K]).unwrap();
    let err = pool.prefill_into((1, slot), (&two, &dk, &dv), &mut o, 4, None);
    assert!(
        matches!(err, Err(RetentionError::ShapeMismatch { .. })),
        "{err:?}"
    );
    let err = pool.prefill_into((1, slot), (&dq, &dk, &dv), &mut o, 0, None);
    assert!(matches!(err, Err(RetentionError::ZeroChunk)), "{err:?}");
    pool.free(slot).unwrap();
    let err = pool.prefill_into((1, slot), (&dq, &dk, &dv), &mut o, 4, None);
    assert!(matches!(err, Err(RetentionError::Slot(_))), "{err:?}");
}

#[test]
fn a_cpu_pool_refuses_prefill_into() {
    let mut pool = pool_on(&Device::Cpu);
    let slot = pool.alloc().unwrap();
    let mem = MemoryPool::on(&Device::Cpu, None).unwrap();
    let z = |s: &[usize]| DeviceTensor::zeros(&mem, &Device::Cpu, DeviceDtype::F32, s).unwrap();
    let (q, v, mut o) = (z(&[1, 3, H, K]), z(&[1, 3, H, V]), z(&[1, 3, H, V]));
    let err = pool.prefill_into((0, slot), (&q, &q, &v), &mut o, 2, None);
    assert!(
        matches!(err, Err(RetentionError::Unsupported { .. })),
        "{err:?}"
    );
}
