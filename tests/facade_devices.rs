//! The facade's forms, one body per device (`Cpu`, `Emulated(sm_80)`, and `Cuda(0)` where a
//! GPU answers), against the f64
//! reference: f32 ≤ 1e-5 relative, bf16 relative RMSE ≤ 5e-3.

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

fn forms_match_reference<T: CpuElement>(device: &Device, tol: f64, rmse: bool) {
    let (b, t, h, k, v) = (2, 7, 2, 64, 64);
    let params = RetentionParams::new(Gammas::retnet_sharded(h, 3).unwrap(), Some(0.3));
    let ret = Retention::new(device, params.clone()).unwrap();
    let (q, kk, vv) = (
        input::<T>(vec![b, t, h, k], 1),
        input::<T>(vec![b, t, h, k], 2),
        input::<T>(vec![b, t, h, v], 3),
    );
    let h0 = input::<f32>(vec![b, h, k, v], 4);
    let (want_o, want_ht) = reference::recurrent(
        &q.to_f64(),
        &kk.to_f64(),
        &vv.to_f64(),
        &params,
        Some(&h0.to_f64()),
    )
    .unwrap();
    let check = |what: &str, got: &[f64], want: &[f64], rmse: bool| {
        let e = if rmse {
            reference::rel_rmse(got, want)
        } else {
            reference::max_rel_diff(got, want)
        };
        assert!(e <= tol, "{device} {what}: {e:e}");
    };
    for c in [1, 3, 64] {
        let (o, ht) = ret.chunkwise(&q, &kk, &vv, c, Some(&h0)).unwrap();
        check(
            &format!("chunkwise C={c} o"),
            o.to_f64().data(),
            want_o.data(),
            rmse,
        );
        check(
            &format!("chunkwise C={c} ht"),
            ht.to_f64().data(),
            want_ht.data(),
            false,
        );
    }
    let (o, ht) = ret.recurrent(&q, &kk, &vv, Some(&h0)).unwrap();
    check("recurrent o", o.to_f64().data(), want_o.data(), rmse);
    check("recurrent ht", ht.to_f64().data(), want_ht.data(), false);
    let o = ret.parallel(&q, &kk, &vv).unwrap();
    let want = reference::parallel(&q.to_f64(), &kk.to_f64(), &vv.to_f64(), &params).unwrap();
    check("parallel", o.to_f64().data(), want.data(), rmse);
    if *device != Device::Cpu {
        // No parallel kernel serves K = 257 (any K up to 256 is): a typed error, not a wrong
        // answer.
        let odd = input::<T>(vec![1, 3, h, 257], 5);
        assert!(matches!(
            ret.parallel(&odd, &odd, &odd),
            Err(RetentionError::Unsupported { .. })
        ));
    }
    assert!(matches!(
        ret.chunkwise(&q, &kk, &vv, 0, None),
        Err(RetentionError::ZeroChunk)
    ));
}

#[test]
fn facade_forms_on_every_device() {
    let mut devices = vec![Device::Cpu, Device::Emulated(kernel_gen::Arch::Sm80)];
    match Device::cuda(0) {
        Ok(gpu) => devices.push(gpu),
        Err(e) => eprintln!("no CUDA device here, so no CUDA run: {e}"),
    }
    for device in devices {
        forms_match_reference::<f32>(&device, 1e-5, false);
        forms_match_reference::<bf16>(&device, 5e-3, true);
    }
    // C = 64 took the catalog's chunkwise kernel on the emulator (FMA path for f32, tensor
    // cores for bf16), and the parallel form its parallel kernel.
    let specs = retention_runtime::ModuleCache::global().specs();
    for dtype in [retention::Dtype::F32, retention::Dtype::Bf16] {
        assert!(
            specs
                .iter()
                .any(|s| s.op == kernel_gen::KernelOp::Chunkwise && s.dtype == dtype),
            "no chunkwise kernel ran for {dtype}"
        );
        assert!(
            specs
                .iter()
                .any(|s| s.op == kernel_gen::KernelOp::Parallel && s.dtype == dtype),
            "no parallel kernel ran for {dtype}"
        );
    }
}

#[test]
fn cuda_without_a_gpu_is_a_typed_error() {
    assert!(matches!(
        Device::from_name("cuda"),
        Err(RetentionError::NoDevice(_)) | Ok(_)
    ));
    if retention_runtime::cuda::device_count() == 0 {
        assert_eq!(Device::best(), Device::Cpu);
        assert!(matches!(
            Device::from_name("cuda:0"),
            Err(RetentionError::NoDevice(_))
        ));
    }
}

#[test]
fn long_prefill_of_few_heads_runs_the_two_phase_kernels() {
    // B·H = 2 is far below the GPU's SM count and T = 600 spans several segments, so the
    // runtime splits the sequence (chunk_states, then chunkwise_segmented).
    let (b, t, h, k, v) = (1, 600, 2, 64, 64);
    let params = RetentionParams::new(Gammas::from_list(vec![0.9, 0.995]).unwrap(), None);
    let mut devices = vec![Device::Emulated(kernel_gen::Arch::Sm80)];
    if let Ok(gpu) = Device::cuda(0) {
        devices.push(gpu);
    }
    for device in devices {
        let ret = Retention::new(&device, params.clone()).unwrap();
        let (q, kk, vv) = (
            input::<bf16>(vec![b, t, h, k], 11),
            input::<bf16>(vec![b, t, h, k], 12),
            input::<bf16>(vec![b, t, h, v], 13),
        );
        let h0 = input::<f32>(vec![b, h, k, v], 14);
        let (want_o, want_ht) = reference::chunkwise(
            &q.to_f64(),
            &kk.to_f64(),
            &vv.to_f64(),
            &params,
            32,
            Some(&h0.to_f64()),
        )
        .unwrap();
        let (o, ht) = ret.chunkwise(&q, &kk, &vv, 32, Some(&h0)).unwrap();
        let e = reference::rel_rmse(o.to_f64().data(), want_o.data());
        assert!(e <= 5e-3, "{device} o: {e:e}");
        let e = reference::max_rel_diff(ht.to_f64().data(), want_ht.data());
        assert!(e <= 1e-5, "{device} ht: {e:e}");
    }
    let specs = retention_runtime::ModuleCache::global().specs();
    for op in [
        kernel_gen::KernelOp::ChunkStates,
        kernel_gen::KernelOp::ChunkwiseSegmented,
    ] {
        assert!(specs.iter().any(|s| s.op == op), "{op:?} never ran");
    }
}
