//! The runtime picks the chunk `retention autotune` cached for this machine and shape bucket,
//! and falls back to the default for a missing, stale or corrupt cache.

use retention_core::{Dtype, Gammas, HostTensor, RetentionShape};
use retention_kernels::reference::RetentionParams;
use retention_runtime::autotune_cache::{
    CACHE_FILE, CacheEntry, CacheFile, CandidateTiming, DEFAULT_CHUNK, ShapeBucket,
    cpu_chunkwise_key,
};
use retention_runtime::{Device, Retention};

fn entry(bucket: ShapeBucket, dtype: Dtype, winner: usize, checksum: Option<&str>) -> CacheEntry {
    let mut key = cpu_chunkwise_key(bucket, dtype);
    if let Some(c) = checksum {
        key.checksum = c.into();
    }
    CacheEntry {
        key,
        method: "test".into(),
        candidates: vec![CandidateTiming {
            chunk: winner,
            seconds: 1e-3,
            runs: 5,
            kernel: None,
        }],
        winner,
        measured_at_unix: 0,
    }
}

#[test]
fn tuned_chunk_reads_the_cached_winner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CACHE_FILE);
    let ret = Retention::new(
        &Device::Cpu,
        RetentionParams::new(Gammas::retnet(4).unwrap(), None),
    )
    .unwrap();
    let shape = RetentionShape::new(1, 1000, 4, 64, 64).unwrap();
    // No cache file yet.
    assert_eq!(
        ret.tuned_chunk_in(&path, &shape, Dtype::Bf16),
        DEFAULT_CHUNK
    );
    // T = 1000 lands in the 1024 bucket.
    let bucket = ShapeBucket::of(1, 1024, 4, 64, 64).unwrap();
    let mut file = CacheFile::default();
    file.insert(entry(bucket, Dtype::Bf16, 128, None));
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    assert_eq!(ret.tuned_chunk_in(&path, &shape, Dtype::Bf16), 128);
    // Another dtype or bucket has no entry.
    assert_eq!(ret.tuned_chunk_in(&path, &shape, Dtype::F32), DEFAULT_CHUNK);
    let long = RetentionShape::new(1, 5000, 4, 64, 64).unwrap();
    assert_eq!(ret.tuned_chunk_in(&path, &long, Dtype::Bf16), DEFAULT_CHUNK);
    // A stale entry (other candidate set) is ignored.
    let mut stale = CacheFile::default();
    stale.insert(entry(bucket, Dtype::Bf16, 16, Some("0000000000000000")));
    std::fs::write(&path, serde_json::to_string(&stale).unwrap()).unwrap();
    assert_eq!(
        ret.tuned_chunk_in(&path, &shape, Dtype::Bf16),
        DEFAULT_CHUNK
    );
    // A corrupt file is no result, not a crash.
    std::fs::write(&path, "{ corrupt").unwrap();
    assert_eq!(
        ret.tuned_chunk_in(&path, &shape, Dtype::Bf16),
        DEFAULT_CHUNK
    );
    // chunkwise_tuned runs (through the default cache location, whatever it holds).
    let q = HostTensor::<f32>::zeros(vec![1, 3, 4, 64]);
    let (o, ht) = ret.chunkwise_tuned(&q, &q, &q, None).unwrap();
    assert_eq!(
        (o.shape(), ht.shape()),
        (&[1, 3, 4, 64][..], &[1, 4, 64, 64][..])
    );
}

#[test]
fn gpu_devices_read_the_winner_of_their_own_catalog_candidates() {
    use kernel_gen::Arch;
    use retention_runtime::autotune_cache::{
        emulated_hardware, gpu_chunkwise_key, gpu_tuning_candidates,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CACHE_FILE);
    let device = Device::Emulated(Arch::Sm80);
    let ret = Retention::new(
        &device,
        RetentionParams::new(Gammas::retnet(8).unwrap(), None),
    )
    .unwrap();
    let shape = RetentionShape::new(2, 700, 8, 64, 64).unwrap();
    let bucket = ShapeBucket::of(2, 1024, 8, 64, 64).unwrap();
    let candidates = gpu_tuning_candidates(bucket, (8, 64, 64), Dtype::Bf16, Arch::Sm80);
    assert!(candidates.len() >= 2, "{candidates:?}");
    let key = gpu_chunkwise_key(
        "emulated:sm_80",
        &emulated_hardware(Arch::Sm80),
        Arch::Sm80,
        bucket,
        Dtype::Bf16,
        &candidates,
    );
    let mut file = CacheFile::default();
    file.insert(CacheEntry {
        key: key.clone(),
        method: "test".into(),
        candidates: vec![],
        winner: 32,
        measured_at_unix: 0,
    });
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    assert_eq!(ret.tuned_chunk_in(&path, &shape, Dtype::Bf16), 32);
    // The CPU's key is another key; a different candidate set is stale.
    let cpu = Retention::new(
        &Device::Cpu,
        RetentionParams::new(Gammas::retnet(8).unwrap(), None),
    )
    .unwrap();
    assert_eq!(
        cpu.tuned_chunk_in(&path, &shape, Dtype::Bf16),
        DEFAULT_CHUNK
    );
    let stale = gpu_chunkwise_key(
        "emulated:sm_80",
        &emulated_hardware(Arch::Sm80),
        Arch::Sm80,
        bucket,
        Dtype::Bf16,
        &candidates[..1],
    );
    assert_ne!(stale.checksum, key.checksum);
}

/// A GPU tuning entry whose winner is `kernel` (chunk `chunk`) for the shape's bucket.
fn gpu_entry(shape: &RetentionShape, dtype: Dtype, chunk: usize, kernel: &str) -> CacheEntry {
    use kernel_gen::Arch;
    use retention_runtime::autotune_cache::{
        emulated_hardware, gpu_chunkwise_key, gpu_tuning_candidates,
    };
    let bucket =
        ShapeBucket::of(shape.batch, shape.seq_len, shape.heads, shape.dk, shape.dv).unwrap();
    let dims = (shape.heads, shape.dk, shape.dv);
    let candidates = gpu_tuning_candidates(bucket, dims, dtype, Arch::Sm80);
    assert!(
        candidates.iter().any(|s| s.slug() == kernel),
        "{kernel} is not a candidate: {:?}",
        candidates
            .iter()
            .map(kernel_gen::KernelSpec::slug)
            .collect::<Vec<_>>()
    );
    let key = gpu_chunkwise_key(
        "emulated:sm_80",
        &emulated_hardware(Arch::Sm80),
        Arch::Sm80,
        bucket,
        dtype,
        &candidates,
    );
    CacheEntry {
        key,
        method: "test".into(),
        candidates: vec![
            CandidateTiming {
                chunk,
                seconds: 2e-6,
                runs: 1,
                kernel: Some(format!("other_{kernel}")),
            },
            CandidateTiming {
                chunk,
                seconds: 1e-6,
                runs: 1,
                kernel: Some(kernel.into()),
            },
        ],
        winner: chunk,
        measured_at_unix: 0,
    }
}

#[test]
fn the_tuning_decides_between_the_one_pass_and_the_two_phase_forward() {
    use kernel_gen::{Arch, KernelOp};
    use retention_kernels::reference;
    // Two heads and 600 tokens: the runtime's plan splits this sequence, so the autotuner
    // times the two-phase forward beside the one-pass kernel, and its verdict is obeyed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(CACHE_FILE);
    let params = RetentionParams::new(Gammas::from_list(vec![0.9, 0.99]).unwrap(), None);
    let ret = Retention::new(&Device::Emulated(Arch::Sm80), params.clone()).unwrap();
    let shape = RetentionShape::new(1, 600, 2, 64, 64).unwrap();
    let input = |seed: u64, d: usize| {
        let mut rng = retention_core::SplitMix64::new(seed);
        HostTensor::<f32>::from_f64(vec![1, 600, 2, d], &rng.vec(600 * 2 * d)).unwrap()
    };
    let (q, k, v) = (input(1, 64), input(2, 64), input(3, 64));
    let (want, _) =
        reference::chunkwise(&q.to_f64(), &k.to_f64(), &v.to_f64(), &params, 32, None).unwrap();
    let ran_two_phase = |dtype: retention_core::Dtype| {
        retention_runtime::ModuleCache::global()
            .specs()
            .iter()
            .any(|s| s.op == KernelOp::ChunkStates && s.dtype == dtype && s.k == 64)
    };
    // The one-pass kernel won (f32): no split, although the heuristic alone would split.
    let mut file = CacheFile::default();
    file.insert(gpu_entry(
        &shape,
        Dtype::F32,
        32,
        "chunkwise_k64_v64_c32_runtime_f32_sm_80",
    ));
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let (o, _) = ret.chunkwise_tuned_in(&path, (&q, &k, &v), None).unwrap();
    assert!(reference::max_rel_diff(o.to_f64().data(), want.data()) <= 1e-5);
    assert!(
        !ran_two_phase(Dtype::F32),
        "the one-pass winner was not obeyed"
    );
    // The two-phase forward won: it runs.
    let mut file = CacheFile::default();
    file.insert(gpu_entry(
        &shape,
        Dtype::F32,
        32,
        "chunkwise_segmented_k64_v64_c32_runtime_f32_sm_80",
    ));
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let (o, _) = ret.chunkwise_tuned_in(&path, (&q, &k, &v), None).unwrap();
    assert!(reference::max_rel_diff(o.to_f64().data(), want.data()) <= 1e-5);
    assert!(
        ran_two_phase(Dtype::F32),
        "the two-phase winner was not obeyed"
    );
}
