//! The device API: one test body per op, run on `Cpu`, `Emulated(sm_80)`, `Emulated(sm_90)`
//! and `Cuda(0)` where a GPU answers, against the f64 reference (f32 ≤ 1e-5 relative, as the
//! facade's tests), with the stream's byte counter checked: the ops themselves move nothing
//! between host and device except the varlen boundaries (4·(N+1) bytes).

use retention::{
    CuSeqlens, Device, DeviceDtype, DeviceTensor, Element, GPU_ALIGN, Gammas, HostTensor,
    MemoryPool, Retention, RetentionError, RetentionParams, Stream, TransferStats, reference,
};

const TOL: f64 = 1e-5;

fn input<T: Element>(shape: Vec<usize>, seed: u64) -> HostTensor<T> {
    let mut rng = retention_core::SplitMix64::new(seed);
    let n = shape.iter().product();
    HostTensor::from_f64(shape, &rng.vec(n)).unwrap()
}

fn devices() -> Vec<Device> {
    let mut d = vec![
        Device::Cpu,
        Device::Emulated(kernel_gen::Arch::Sm80),
        Device::Emulated(kernel_gen::Arch::Sm90),
    ];
    if let Ok(cuda) = Device::cuda(0) {
        d.push(cuda);
    }
    d
}

fn close(what: &str, got: &HostTensor<f32>, want: &HostTensor<f64>) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let e = reference::max_rel_diff(got.to_f64().data(), want.data());
    assert!(e <= TOL, "{what}: {e:e}");
}

struct Fixture {
    ret: Retention,
    mem: MemoryPool,
    stream: Stream,
    params: RetentionParams,
}

impl Fixture {
    fn new(device: &Device) -> Self {
        let params = RetentionParams::new(Gammas::retnet_sharded(2, 3).unwrap(), Some(0.3));
        Self {
            ret: Retention::new(device, params.clone()).unwrap(),
            mem: MemoryPool::on(device, None).unwrap(),
            stream: Stream::new(device).unwrap(),
            params,
        }
    }
    fn up(&self, h: &HostTensor<f32>) -> DeviceTensor {
        DeviceTensor::upload(&self.mem, h, &self.stream).unwrap()
    }
    fn zeros(&self, shape: &[usize]) -> DeviceTensor {
        DeviceTensor::zeros(&self.mem, self.stream.device(), DeviceDtype::F32, shape).unwrap()
    }
    fn down(&self, t: &DeviceTensor) -> HostTensor<f32> {
        t.download(&self.stream).unwrap()
    }
}

/// Dense forms: parallel, chunkwise (a served chunk and one that falls back to decode
/// launches), recurrent; the ops move no bytes between host and device.
fn dense_forms(device: &Device) {
    let f = Fixture::new(device);
    let (b, t, h, k, v) = (2, 7, 2, 64, 64);
    let (q, kk, vv) = (
        input::<f32>(vec![b, t, h, k], 1),
        input::<f32>(vec![b, t, h, k], 2),
        input::<f32>(vec![b, t, h, v], 3),
    );
    let h0 = input::<f32>(vec![b, h, k, v], 4);
    let (want_o, want_ht) = reference::recurrent(
        &q.to_f64(),
        &kk.to_f64(),
        &vv.to_f64(),
        &f.params,
        Some(&h0.to_f64()),
    )
    .unwrap();
    let want_par = reference::parallel(&q.to_f64(), &kk.to_f64(), &vv.to_f64(), &f.params).unwrap();
    let (dq, dk, dv, dh0) = (f.up(&q), f.up(&kk), f.up(&vv), f.up(&h0));
    let mut o = f.zeros(&[b, t, h, v]);
    let mut ht = f.zeros(&[b, h, k, v]);
    let before = f.stream.transfers();
    f.ret
        .parallel_into((&dq, &dk, &dv), &mut o, Some(&f.stream))
        .unwrap();
    assert_eq!(
        f.stream.transfers(),
        before,
        "{device}: parallel moved host bytes"
    );
    close(&format!("{device} parallel"), &f.down(&o), &want_par);
    for chunk in [64, 3] {
        let before = f.stream.transfers();
        f.ret
            .chunkwise_into(
                (&dq, &dk, &dv),
                Some(&dh0),
                (&mut o, &mut ht),
                chunk,
                Some(&f.stream),
            )
            .unwrap();
        assert_eq!(
            f.stream.transfers(),
            before,
            "{device}: chunkwise moved host bytes"
        );
        close(
            &format!("{device} chunkwise C={chunk} o"),
            &f.down(&o),
            &want_o,
        );
        close(
            &format!("{device} chunkwise C={chunk} ht"),
            &f.down(&ht),
            &want_ht,
        );
    }
    f.ret
        .recurrent_into(
            (&dq, &dk, &dv),
            Some(&dh0),
            (&mut o, &mut ht),
            Some(&f.stream),
        )
        .unwrap();
    close(&format!("{device} recurrent o"), &f.down(&o), &want_o);
    close(&format!("{device} recurrent ht"), &f.down(&ht), &want_ht);
    if *device != Device::Cpu {
        // The catalog's PTX ran: its modules were generated and loaded.
        assert!(retention_runtime::ModuleCache::global().stats().modules > 0);
    }
}

/// Varlen chunkwise and recurrent over lengths 5, 0 and 9 with H0.
fn varlen_forms(device: &Device) {
    let f = Fixture::new(device);
    let (h, k, v) = (2, 64, 64);
    let cu = CuSeqlens::new(vec![0, 5, 5, 14], 14).unwrap();
    let (q, kk, vv) = (
        input::<f32>(vec![1, 14, h, k], 5),
        input::<f32>(vec![1, 14, h, k], 6),
        input::<f32>(vec![1, 14, h, v], 7),
    );
    let h0 = input::<f32>(vec![3, h, k, v], 8);
    let (want_o, want_ht) = reference::chunkwise_varlen(
        &q.to_f64(),
        &kk.to_f64(),
        &vv.to_f64(),
        &cu,
        &f.params,
        4,
        Some(&h0.to_f64()),
    )
    .unwrap();
    let (dq, dk, dv, dh0) = (f.up(&q), f.up(&kk), f.up(&vv), f.up(&h0));
    let mut o = f.zeros(&[1, 14, h, v]);
    let mut ht = f.zeros(&[3, h, k, v]);
    let before = f.stream.transfers();
    f.ret
        .chunkwise_varlen_into(
            (&dq, &dk, &dv),
            &cu,
            Some(&dh0),
            (&mut o, &mut ht),
            64,
            Some(&f.stream),
        )
        .unwrap();
    let moved = f.stream.transfers().since(&before);
    assert_eq!(moved.d2h_bytes, 0, "{device}");
    assert!(moved.h2d_bytes <= 4 * 4, "{device}: {moved:?}");
    close(
        &format!("{device} varlen chunkwise o"),
        &f.down(&o),
        &want_o,
    );
    close(
        &format!("{device} varlen chunkwise ht"),
        &f.down(&ht),
        &want_ht,
    );
    f.ret
        .recurrent_varlen_into(
            (&dq, &dk, &dv),
            &cu,
            Some(&dh0),
            (&mut o, &mut ht),
            Some(&f.stream),
        )
        .unwrap();
    close(
        &format!("{device} varlen recurrent o"),
        &f.down(&o),
        &want_o,
    );
    close(
        &format!("{device} varlen recurrent ht"),
        &f.down(&ht),
        &want_ht,
    );
    // The host convenience agrees.
    let (ho, hht) = f
        .ret
        .chunkwise_varlen((&q, &kk, &vv), &cu, Some(&h0), 64)
        .unwrap();
    close(&format!("{device} host varlen o"), &ho, &want_o);
    close(&format!("{device} host varlen ht"), &hht, &want_ht);
}

/// The MSR epilogue: the CPU kernel on the CPU, the epilogue family's kernel on GPU-like
/// devices; the op moves no bytes between host and device.
fn epilogue(device: &Device) {
    let f = Fixture::new(device);
    let (o, g) = (
        input::<f32>(vec![1, 3, 2, 64], 9),
        input::<f32>(vec![1, 3, 2, 64], 10),
    );
    let (d_o, d_g) = (f.up(&o), f.up(&g));
    let mut out = f.zeros(&[1, 3, 2, 64]);
    let before = f.stream.transfers();
    f.ret
        .msr_epilogue_into(&d_o, &d_g, 0.0, &mut out, Some(&f.stream))
        .unwrap();
    assert_eq!(
        f.stream.transfers().since(&before),
        TransferStats::default()
    );
    let want = reference::msr_epilogue(&o.to_f64(), &g.to_f64(), 0.0).unwrap();
    close(&format!("{device} epilogue"), &f.down(&out), &want);
}

#[test]
fn dense_forms_on_every_device() {
    for d in devices() {
        dense_forms(&d);
    }
}

#[test]
fn varlen_forms_on_every_device() {
    for d in devices() {
        varlen_forms(&d);
    }
}

#[test]
fn msr_epilogue_on_every_device() {
    for d in devices() {
        epilogue(&d);
    }
}

#[test]
fn wrong_device_dtype_or_shape_is_a_typed_error() {
    let emu = Fixture::new(&Device::Emulated(kernel_gen::Arch::Sm80));
    let cpu = Fixture::new(&Device::Cpu);
    let x = input::<f32>(vec![1, 4, 2, 64], 11);
    let (eq, cq) = (emu.up(&x), cpu.up(&x));
    let mut o = emu.zeros(&[1, 4, 2, 64]);
    assert!(matches!(
        emu.ret.parallel_into((&eq, &cq, &eq), &mut o, None),
        Err(RetentionError::WrongDevice { .. })
    ));
    let half = DeviceTensor::upload(&emu.mem, &x.cast::<half::bf16>(), &emu.stream).unwrap();
    assert!(matches!(
        emu.ret.parallel_into((&eq, &half, &eq), &mut o, None),
        Err(RetentionError::DtypeMismatch { .. })
    ));
    let mut short = emu.zeros(&[1, 3, 2, 64]);
    assert!(matches!(
        emu.ret.parallel_into((&eq, &eq, &eq), &mut short, None),
        Err(RetentionError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        emu.ret
            .parallel_into((&eq, &eq, &eq), &mut o, Some(&cpu.stream)),
        Err(RetentionError::WrongDevice { .. })
    ));
    let mut ht = emu.zeros(&[1, 2, 64, 64]);
    assert!(matches!(
        emu.ret
            .chunkwise_into((&eq, &eq, &eq), None, (&mut o, &mut ht), 0, None),
        Err(RetentionError::ZeroChunk)
    ));
    let _ = TransferStats::default();
}

#[test]
fn borrowed_memory_is_read_and_written_in_place_and_never_freed() {
    for device in [Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)] {
        let f = Fixture::new(&device);
        let (q, kk, vv) = (
            input::<f32>(vec![1, 5, 2, 64], 12),
            input::<f32>(vec![1, 5, 2, 64], 13),
            input::<f32>(vec![1, 5, 2, 64], 14),
        );
        let mut caller_q = q.data().to_vec();
        let mut caller_o = vec![0.0f32; 5 * 2 * 64];
        let shape = [1, 5, 2, 64];
        let in_use = f.mem.stats().in_use;
        {
            // SAFETY: both vectors outlive the tensors and nothing else touches them meanwhile.
            let bq = unsafe {
                DeviceTensor::from_raw(
                    &device,
                    DeviceDtype::F32,
                    &shape,
                    caller_q.as_mut_ptr() as u64,
                )
            };
            let mut bo = unsafe {
                DeviceTensor::from_raw(
                    &device,
                    DeviceDtype::F32,
                    &shape,
                    caller_o.as_mut_ptr() as u64,
                )
            };
            assert!(bq.is_borrowed());
            let (dk, dv) = (f.up(&kk), f.up(&vv));
            f.ret
                .parallel_into((&bq, &dk, &dv), &mut bo, Some(&f.stream))
                .unwrap();
        }
        // Dropping the views freed nothing: the caller's memory is intact and the pool only
        // got back the blocks it handed out.
        assert_eq!(caller_q, q.data());
        assert_eq!(f.mem.stats().in_use, in_use);
        let want = reference::parallel(&q.to_f64(), &kk.to_f64(), &vv.to_f64(), &f.params).unwrap();
        close(
            &format!("{device} borrowed o"),
            &HostTensor::new(shape.to_vec(), caller_o).unwrap(),
            &want,
        );
    }
}

/// A borrowed buffer that does not start on a 16-byte boundary is refused on GPU-like
/// devices with a typed error naming the tensor (the kernels' vector accesses would fault
/// on a GPU), and still served on the CPU.
#[test]
fn misaligned_borrowed_buffers_are_typed_errors_on_gpu_devices() {
    for device in [Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)] {
        let f = Fixture::new(&device);
        let q = input::<f32>(vec![1, 5, 2, 64], 21);
        // One extra f32 in front: the view starts 4 bytes past a 16-byte boundary.
        let mut backing = vec![0.0f32; 4 + q.data().len()];
        let start = backing.as_ptr() as u64;
        let at = (0..4)
            .find(|i| !(start + 4 * i).is_multiple_of(GPU_ALIGN))
            .unwrap() as usize;
        backing[at..at + q.data().len()].copy_from_slice(q.data());
        let address = backing[at..].as_mut_ptr() as u64;
        assert_ne!(address % GPU_ALIGN, 0);
        // SAFETY: `backing` outlives the view and nothing else touches it meanwhile.
        let bq = unsafe { DeviceTensor::from_raw(&device, DeviceDtype::F32, q.shape(), address) };
        let (dk, mut o) = (f.up(&q), f.up(&q));
        let got = f
            .ret
            .parallel_into((&bq, &dk, &dk), &mut o, Some(&f.stream));
        match (&device, got) {
            (Device::Cpu, r) => r.unwrap(),
            (_, Err(RetentionError::Unsupported { what, reason, .. })) => {
                assert_eq!(what, "q address");
                assert!(reason.contains("16-byte"), "{reason}");
            }
            (_, other) => panic!("{device}: {other:?}"),
        }
    }
}

#[test]
fn retention_and_state_pool_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Retention>();
    send::<retention::StatePool>();
    send_sync::<DeviceTensor>();
    send_sync::<Stream>();
}

/// On the CPU device the kernels read and write the tensors' own memory: a borrowed output
/// buffer holds the result afterwards; an output overlapping an input, or an address not
/// aligned for the element type, is a typed error (a slice over either would be undefined
/// behaviour), and the refused call leaves the memory as it was.
#[test]
fn cpu_device_runs_in_place_and_refuses_overlapping_or_misaligned_memory() {
    let f = Fixture::new(&Device::Cpu);
    let (q, k, v) = (
        input::<f32>(vec![1, 9, 2, 8], 31),
        input::<f32>(vec![1, 9, 2, 8], 32),
        input::<f32>(vec![1, 9, 2, 8], 33),
    );
    let want = f.ret.parallel(&q, &k, &v).unwrap();
    let (dq, dk, dv) = (f.up(&q), f.up(&k), f.up(&v));
    let mut backing = vec![f32::NAN; q.len() + 1];
    let borrow = |at: u64| {
        // SAFETY: `backing` outlives every view and nothing else touches it meanwhile.
        unsafe { DeviceTensor::from_raw(&Device::Cpu, DeviceDtype::F32, q.shape(), at) }
    };
    let base = backing.as_mut_ptr() as u64;
    let mut o = borrow(base);
    f.ret
        .parallel_into((&dq, &dk, &dv), &mut o, Some(&f.stream))
        .unwrap();
    assert_eq!(&backing[..q.len()], want.data(), "written in place");

    // q borrowed over the output's own bytes (shifted by one element): refused, untouched.
    let before = backing.clone();
    let overlapping_q = borrow(base + 4);
    let got = f
        .ret
        .parallel_into((&overlapping_q, &dk, &dv), &mut o, Some(&f.stream));
    match got {
        Err(RetentionError::Unsupported { what, reason, .. }) => {
            assert_eq!(what, "memory of o");
            assert!(reason.contains("overlaps q"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(&backing, &before), "a refused call writes nothing");

    // An output two bytes past an f32 boundary.
    let mut misaligned = borrow(base + 2);
    match f
        .ret
        .parallel_into((&dq, &dk, &dv), &mut misaligned, Some(&f.stream))
    {
        Err(RetentionError::Unsupported { what, reason, .. }) => {
            assert_eq!(what, "address of o");
            assert!(reason.contains("4 bytes"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(same(&backing, &before), "a refused call writes nothing");
}
