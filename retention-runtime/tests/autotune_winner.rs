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
        emulated_hardware, gpu_chunkwise_candidates, gpu_chunkwise_key,
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
    let candidates = gpu_chunkwise_candidates(8, 64, 64, Dtype::Bf16, Arch::Sm80);
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
