//! Backend tests. The first group runs everywhere; the GPU group runs only where a CUDA
//! device answers and otherwise prints why it skipped (ARCHITECTURE §4).

use retention_core::RetentionError;

use super::*;

/// Assembled with ptxas 12.9 for sm_80 and sm_90 when written.
const ADD_SCALAR_PTX: &str = include_str!("testdata/add_scalar.ptx");

#[test]
fn no_driver_means_no_device_and_no_panic() {
    if driver_present() {
        eprintln!("libcuda is present here: the no-driver assertions do not apply");
    } else {
        assert_eq!(device_count(), 0);
        let err = CudaBackend::new(0).unwrap_err();
        assert!(
            matches!(&err, RetentionError::NoDevice(m) if m.contains("libcuda")),
            "{err:?}"
        );
    }
}

#[test]
fn ordinal_past_the_last_device_is_no_device() {
    for ordinal in [device_count(), device_count() + 7, usize::MAX] {
        let err = CudaBackend::new(ordinal).unwrap_err();
        assert!(matches!(err, RetentionError::NoDevice(_)), "{err:?}");
    }
}

#[test]
fn device_objects_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CudaBackend>();
    send_sync::<Stream>();
    send_sync::<Module>();
    send_sync::<Kernel>();
    send_sync::<Event>();
    send_sync::<DeviceBuffer<f32>>();
}

#[test]
fn scalar_arguments_fit_only_their_declared_types() {
    use ParamType as P;
    assert!(KernelArg::u32(3).fits(&P::U32) && KernelArg::u32(3).fits(&P::S32));
    assert!(KernelArg::u32(3).fits(&P::B32) && !KernelArg::u32(3).fits(&P::U64));
    assert!(KernelArg::f32(1.0).fits(&P::F32) && KernelArg::f32(1.0).fits(&P::B32));
    assert!(!KernelArg::f32(1.0).fits(&P::U32) && !KernelArg::f32(1.0).fits(&P::F64));
    assert!(KernelArg::u64(9).fits(&P::U64) && KernelArg::u64(9).fits(&P::B64));
    assert!(!KernelArg::u64(9).fits(&P::U32) && !KernelArg::u64(9).fits(&P::Other(".b8".into())));
}

#[test]
fn the_test_kernel_declares_the_documented_parameters() {
    let entries = super::signature::parse_entries(ADD_SCALAR_PTX).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "add_scalar");
    assert_eq!(
        entries[0].params,
        [ParamType::U64, ParamType::U32, ParamType::F32]
    );
}

fn gpu_or_skip(test: &str) -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(backend) => Some(backend),
        Err(err) => {
            eprintln!("skipping {test}: {err}");
            None
        }
    }
}

/// Launches `add_scalar` over all of `data` on `stream` with 128-thread blocks.
fn add_scalar(stream: &Stream, kernel: &Kernel, data: &mut DeviceBuffer<f32>, value: f32) {
    let n = u32::try_from(data.len()).unwrap();
    let dims = LaunchDims::linear(n.div_ceil(128), 128);
    let mut args = [
        KernelArg::output(data),
        KernelArg::u32(n),
        KernelArg::f32(value),
    ];
    // SAFETY: `add_scalar` takes (f32 data, n, value) and touches data[0..n), n = data.len().
    unsafe { stream.launch(kernel, dims, &mut args) }.unwrap();
}

#[test]
fn gpu_launch_adds_a_scalar_to_every_element() {
    let Some(backend) = gpu_or_skip("gpu_launch_adds_a_scalar_to_every_element") else {
        return;
    };
    let module = backend.load_module(ADD_SCALAR_PTX).unwrap();
    assert_eq!(module.entry_names().collect::<Vec<_>>(), ["add_scalar"]);
    let kernel = module.kernel("add_scalar").unwrap();
    let stream = backend.default_stream();

    // 1000 is not a multiple of the block size: the tail guard is exercised.
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 100.0).collect();
    let mut data = stream.upload(&host).unwrap();
    let start = stream.record_event().unwrap();
    add_scalar(stream, &kernel, &mut data, 1.0);
    add_scalar(stream, &kernel, &mut data, 0.25);
    let end = stream.record_event().unwrap();
    let got = stream.download(&data).unwrap();
    let want: Vec<f32> = host.iter().map(|x| x + 1.0 + 0.25).collect();
    assert_eq!(got, want, "every element exactly once, in launch order");
    let ms = start.elapsed_ms(&end).unwrap();
    assert!(ms.is_finite() && ms >= 0.0, "{ms}");
}

#[test]
fn gpu_work_on_a_second_stream_is_seen_by_the_default_stream() {
    let Some(backend) = gpu_or_skip("gpu_work_on_a_second_stream_is_seen_by_the_default_stream")
    else {
        return;
    };
    let kernel = backend
        .load_module(ADD_SCALAR_PTX)
        .unwrap()
        .kernel("add_scalar")
        .unwrap();
    let side = backend.new_stream().unwrap();
    let mut data = side.alloc_zeros::<f32>(4096).unwrap();
    add_scalar(&side, &kernel, &mut data, 3.0);
    side.synchronize().unwrap();
    let got = backend.default_stream().download(&data).unwrap();
    assert!(got.iter().all(|&x| x == 3.0));

    let mut host = vec![0.0f32; 4096];
    backend
        .default_stream()
        .copy_to_host(&data, &mut host)
        .unwrap();
    assert_eq!(host, got);
    backend
        .default_stream()
        .copy_to_device(&vec![2.0; 4096], &mut data)
        .unwrap();
    assert_eq!(
        backend.default_stream().download(&data).unwrap(),
        vec![2.0; 4096]
    );
}

#[test]
fn gpu_bad_launches_and_copies_are_typed_errors() {
    let Some(backend) = gpu_or_skip("gpu_bad_launches_and_copies_are_typed_errors") else {
        return;
    };
    let module = backend.load_module(ADD_SCALAR_PTX).unwrap();
    assert!(matches!(
        module.kernel("nope"),
        Err(RetentionError::KernelLoad(_))
    ));
    let kernel = module.kernel("add_scalar").unwrap();
    let stream = backend.default_stream();
    let mut data = stream.alloc_zeros::<f32>(8).unwrap();

    let dims = LaunchDims::linear(1, 8);
    let mut too_few = [KernelArg::output(&mut data), KernelArg::u32(8)];
    // SAFETY: rejected before reaching the driver (argument count), so nothing runs.
    let err = unsafe { stream.launch(&kernel, dims, &mut too_few) }.unwrap_err();
    assert!(
        matches!(&err, RetentionError::KernelLoad(m) if m.contains("add_scalar")),
        "{err:?}"
    );
    let mut swapped = [
        KernelArg::output(&mut data),
        KernelArg::f32(1.0),
        KernelArg::u32(8),
    ];
    // SAFETY: rejected before reaching the driver (argument types), so nothing runs.
    let err = unsafe { stream.launch(&kernel, dims, &mut swapped) }.unwrap_err();
    assert!(matches!(err, RetentionError::KernelLoad(_)), "{err:?}");
    let mut args = [
        KernelArg::output(&mut data),
        KernelArg::u32(8),
        KernelArg::f32(1.0),
    ];
    // SAFETY: rejected before reaching the driver (zero grid), so nothing runs.
    let err = unsafe { stream.launch(&kernel, LaunchDims::linear(0, 8), &mut args) }.unwrap_err();
    assert!(matches!(err, RetentionError::Unsupported { .. }), "{err:?}");
    let mut args = [
        KernelArg::output(&mut data),
        KernelArg::u32(8),
        KernelArg::f32(1.0),
    ];
    // SAFETY: the driver refuses 2048 threads per block (limit 1024), so nothing runs.
    let err =
        unsafe { stream.launch(&kernel, LaunchDims::linear(1, 2048), &mut args) }.unwrap_err();
    assert!(matches!(err, RetentionError::KernelLoad(_)), "{err:?}");

    let err = stream.copy_to_device(&[1.0f32; 7], &mut data).unwrap_err();
    assert!(
        matches!(
            err,
            RetentionError::DataLength {
                len: 7,
                needed: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        stream.alloc_zeros::<f32>(0),
        Err(RetentionError::Unsupported { .. })
    ));
    assert_eq!(
        stream.download(&data).unwrap(),
        vec![0.0; 8],
        "refused launches ran nothing"
    );
}

#[test]
fn gpu_out_of_memory_is_an_error_and_the_device_stays_usable() {
    let Some(backend) = gpu_or_skip("gpu_out_of_memory_is_an_error_and_the_device_stays_usable")
    else {
        return;
    };
    let stream = backend.default_stream();
    let (_, total) = backend.memory_info().unwrap();
    let err = stream.alloc_zeros::<u8>(total + (1 << 30)).unwrap_err();
    assert!(
        matches!(err, RetentionError::OutOfMemory { requested, .. } if requested == total + (1 << 30)),
        "{err:?}"
    );
    let err = stream.alloc_zeros::<f32>(usize::MAX / 2).unwrap_err();
    assert!(matches!(err, RetentionError::OutOfMemory { .. }), "{err:?}");
    let small = stream.upload(&[7u32; 16]).unwrap();
    assert_eq!(stream.download(&small).unwrap(), vec![7u32; 16]);
}

#[test]
fn gpu_rejects_bad_ptx_with_kernel_load() {
    let Some(backend) = gpu_or_skip("gpu_rejects_bad_ptx_with_kernel_load") else {
        return;
    };
    for bad in [
        "not ptx at all",
        ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k() { bogus.op; }",
        "has a \0 byte",
    ] {
        let err = backend.load_module(bad).unwrap_err();
        assert!(matches!(err, RetentionError::KernelLoad(_)), "{err:?}");
    }
}

#[test]
fn gpu_ranged_copies_touch_only_their_range() {
    let Some(backend) = gpu_or_skip("gpu_ranged_copies_touch_only_their_range") else {
        return;
    };
    let stream = backend.default_stream();
    let mut a = stream.upload(&[1.0f32; 16]).unwrap();
    let mut b = stream.alloc_zeros::<f32>(16).unwrap();
    stream.copy_to_device_at(&[5.0, 6.0], &mut a, 3).unwrap();
    stream.copy_on_device((&a, 2), (&mut b, 10), 4).unwrap();
    stream.zero_range(&mut a, 0, 2).unwrap();
    let mut part = [0.0f32; 3];
    stream.copy_to_host_from(&b, 10, &mut part).unwrap();
    assert_eq!(part, [1.0, 5.0, 6.0]);
    let mut want_a = [1.0f32; 16];
    want_a[..2].fill(0.0);
    want_a[3] = 5.0;
    want_a[4] = 6.0;
    assert_eq!(stream.download(&a).unwrap(), want_a);
    assert!(matches!(
        stream.copy_to_device_at(&[1.0, 2.0], &mut a, 15),
        Err(RetentionError::DataLength { .. })
    ));
    assert!(matches!(
        stream.copy_on_device((&a, 14), (&mut b, 0), 4),
        Err(RetentionError::DataLength { .. })
    ));
}
