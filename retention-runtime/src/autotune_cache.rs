//! The autotune cache: every candidate's timing, keyed so a result is reused only where it
//! applies. One JSON file, `autotune.json`, in [`cache_dir`].
//!
//! A key holds the op, the device and its hardware (CPU model or GPU name), the architecture,
//! the input dtype, a power-of-two shape bucket, and a checksum of the candidate set and the
//! kernel-gen version. An entry whose checksum differs from the current one is stale: it is
//! ignored and replaced by the next tuning. A file that cannot be parsed is reported and
//! rebuilt, never a crash.
//!
//! The runtime reads winners through [`cached_winner`] ([`crate::Retention::tuned_chunk`]);
//! `retention autotune` writes the entries.

use std::path::{Path, PathBuf};

use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec};
use retention_core::Dtype;
use serde::{Deserialize, Serialize};

pub use kernel_gen::spec::fnv1a64;

/// Layout version of `autotune.json`.
pub const CACHE_SCHEMA: u32 = 1;

/// The cache file's name inside the cache directory.
pub const CACHE_FILE: &str = "autotune.json";

/// A power-of-two shape bucket: each size rounded up to the next power of two, so nearby
/// shapes share a tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeBucket {
    /// Sequences per call.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Heads H.
    pub heads: usize,
    /// Key head dimension K.
    pub dk: usize,
    /// Value head dimension V.
    pub dv: usize,
}

impl ShapeBucket {
    /// The bucket holding (batch, T, H, K, V); `None` when a size has no power of two above
    /// it in a `usize`.
    pub fn of(batch: usize, seq_len: usize, heads: usize, dk: usize, dv: usize) -> Option<Self> {
        Some(Self {
            batch: batch.checked_next_power_of_two()?,
            seq_len: seq_len.checked_next_power_of_two()?,
            heads: heads.checked_next_power_of_two()?,
            dk: dk.checked_next_power_of_two()?,
            dv: dv.checked_next_power_of_two()?,
        })
    }
}

/// What a tuning result applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuneKey {
    /// The tuned op, e.g. `chunkwise`.
    pub op: String,
    /// Device name, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// CPU architecture or GPU compute capability, e.g. `x86_64`, `sm_90`.
    pub arch: String,
    /// CPU model, or GPU name and driver version.
    pub hardware: String,
    /// Input dtype.
    pub dtype: String,
    /// The shape bucket.
    pub bucket: ShapeBucket,
    /// FNV-1a of the candidate set and the kernel-gen version, 16 hex digits.
    pub checksum: String,
}

impl TuneKey {
    /// Whether `other` is the same key except for its checksum (a stale result for this key).
    pub fn same_but_checksum(&self, other: &TuneKey) -> bool {
        TuneKey {
            checksum: other.checksum.clone(),
            ..self.clone()
        } == *other
    }
}

/// One candidate's measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateTiming {
    /// The chunk size tried.
    pub chunk: usize,
    /// Median seconds per call (or the predicted seconds, for the emulator).
    pub seconds: f64,
    /// Timed calls behind the median (1 for a prediction).
    pub runs: usize,
    /// The catalog kernel tried, where the candidate is one (emulated and GPU tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

/// A tuning result: every candidate's timing and the winner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// What it applies to.
    pub key: TuneKey,
    /// How the timings were taken (e.g. `cpu wall clock, median of repeated runs`).
    pub method: String,
    /// Every candidate, in the order tried.
    pub candidates: Vec<CandidateTiming>,
    /// The fastest candidate's chunk.
    pub winner: usize,
    /// When it was measured, seconds since the Unix epoch.
    pub measured_at_unix: u64,
}

/// The whole cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheFile {
    /// [`CACHE_SCHEMA`].
    pub schema: u32,
    /// Tuning results, at most one per key.
    pub entries: Vec<CacheEntry>,
}

impl Default for CacheFile {
    fn default() -> Self {
        Self {
            schema: CACHE_SCHEMA,
            entries: Vec::new(),
        }
    }
}

/// What reading the cache found.
#[derive(Debug)]
pub enum Loaded {
    /// No cache file yet.
    Missing,
    /// A valid file.
    Valid(CacheFile),
    /// A file that is not a valid cache (the reason says why); treat as empty and rebuild.
    Corrupt(String),
}

/// The cache directory: `$RETENTION_CACHE_DIR`, else `$XDG_CACHE_HOME/retention`, else
/// `$HOME/.cache/retention`; `None` when none of these is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("RETENTION_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("retention")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("retention")))
}

/// Read `path`.
pub fn load(path: &Path) -> Loaded {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Corrupt(e.to_string()),
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(file) if file.schema == CACHE_SCHEMA => Loaded::Valid(file),
        Ok(file) => Loaded::Corrupt(format!(
            "schema {} (this build reads {CACHE_SCHEMA})",
            file.schema
        )),
        Err(e) => Loaded::Corrupt(e.to_string()),
    }
}

impl CacheFile {
    /// The entry for exactly `key` (stale entries never match).
    pub fn lookup(&self, key: &TuneKey) -> Option<&CacheEntry> {
        self.entries.iter().find(|e| e.key == *key)
    }

    /// Entries for `key` under another checksum.
    pub fn stale(&self, key: &TuneKey) -> usize {
        self.entries
            .iter()
            .filter(|e| e.key != *key && key.same_but_checksum(&e.key))
            .count()
    }

    /// Store `entry`, replacing its key's previous and stale entries.
    pub fn insert(&mut self, entry: CacheEntry) {
        self.entries
            .retain(|e| !entry.key.same_but_checksum(&e.key));
        self.entries.push(entry);
    }
}

/// The cached winning chunk for `key` in the cache file at `path`, if a current entry exists
/// (missing, corrupt or stale caches give `None`). What the runtime calls to pick a chunk.
pub fn cached_winner(path: &Path, key: &TuneKey) -> Option<usize> {
    match load(path) {
        Loaded::Valid(file) => file.lookup(key).map(|e| e.winner),
        Loaded::Missing | Loaded::Corrupt(_) => None,
    }
}

/// The chunk sizes the CPU chunkwise kernel is tuned over.
pub const CHUNK_CANDIDATES: [usize; 5] = [16, 32, 64, 128, 256];

/// The chunk used when no tuning result applies.
pub const DEFAULT_CHUNK: usize = 64;

/// The kernel version the timings describe (every workspace member shares one version).
pub const KERNEL_GEN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The checksum of what this build tunes over: a change to the candidate set, the op or the
/// kernel version makes older entries stale.
pub fn candidate_checksum() -> String {
    let chunks: Vec<String> = CHUNK_CANDIDATES.iter().map(usize::to_string).collect();
    let text = format!(
        "op=chunkwise;chunks={};kernel-gen={KERNEL_GEN_VERSION}",
        chunks.join(",")
    );
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// The key of the CPU chunkwise kernel on this machine for a shape bucket and input dtype.
pub fn cpu_chunkwise_key(bucket: ShapeBucket, dtype: Dtype) -> TuneKey {
    TuneKey {
        op: "chunkwise".into(),
        device: "cpu".into(),
        arch: std::env::consts::ARCH.into(),
        hardware: cpu_model(),
        dtype: dtype.name().into(),
        bucket,
        checksum: candidate_checksum(),
    }
}

/// The catalog's chunkwise variants a GPU of `arch` tunes over for (K, V, dtype) and `heads`
/// heads: those with the RetNet decays of exactly `heads` heads when the catalog has them,
/// else the runtime-γ ones (what the runtime would launch for that model). Empty when no
/// variant serves the shape.
pub fn gpu_chunkwise_candidates(
    heads: usize,
    dk: usize,
    dv: usize,
    dtype: Dtype,
    arch: Arch,
) -> Vec<KernelSpec> {
    let shape: Vec<KernelSpec> = kernel_gen::catalog::default_catalog()
        .into_iter()
        .filter(|s| {
            s.op == KernelOp::Chunkwise
                && s.k as usize == dk
                && s.v as usize == dv
                && s.dtype == dtype
                && s.arch == arch
        })
        .collect();
    let named = GammaSet::Retnet {
        heads: u32::try_from(heads).unwrap_or(u32::MAX),
    };
    let wanted = if shape.iter().any(|s| s.gammas == named) {
        named
    } else {
        GammaSet::Runtime
    };
    shape.into_iter().filter(|s| s.gammas == wanted).collect()
}

/// What `retention autotune` times on a GPU for a shape bucket and the exact (H, K, V): the
/// one-pass chunkwise candidates ([`gpu_chunkwise_candidates`]), then — for each chunk where
/// the runtime's two-phase plan applies to (bucket batch, H, bucket T) — the two-phase
/// forward, named by its `chunkwise_segmented` spec. The winner decides both the chunk and
/// whether [`crate::Retention::chunkwise_tuned`] splits the sequence.
pub fn gpu_tuning_candidates(
    bucket: ShapeBucket,
    (heads, dk, dv): (usize, usize, usize),
    dtype: Dtype,
    arch: Arch,
) -> Vec<KernelSpec> {
    let one_pass = gpu_chunkwise_candidates(heads, dk, dv, dtype, arch);
    let shape = retention_core::RetentionShape::new(bucket.batch, bucket.seq_len, heads, dk, dv);
    let mut all = one_pass.clone();
    if let Ok(shape) = shape {
        all.extend(
            one_pass
                .iter()
                .filter_map(|s| crate::gpu_chunkwise::two_phase(s, &shape, arch))
                .map(|plan| plan.segmented_spec),
        );
    }
    all
}

/// The winning candidate for `key` in the cache file at `path`: its chunk and, for GPU
/// entries, its kernel's name (a `chunkwise_segmented_…` kernel means the two-phase
/// forward won).
pub fn cached_winning_kernel(path: &Path, key: &TuneKey) -> Option<(usize, Option<String>)> {
    let Loaded::Valid(file) = load(path) else {
        return None;
    };
    let entry = file.lookup(key)?;
    let kernel = entry
        .candidates
        .iter()
        .filter(|c| c.chunk == entry.winner)
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .and_then(|c| c.kernel.clone());
    Some((entry.winner, kernel))
}

/// The key of the catalog's chunkwise kernels on a GPU-like device: `device` is its name
/// (`cuda:0`, `emulated:sm_80`), `hardware` the GPU's name (or the emulator's model), and
/// the checksum covers the candidate specs and the kernel-gen version.
pub fn gpu_chunkwise_key(
    device: &str,
    hardware: &str,
    arch: Arch,
    bucket: ShapeBucket,
    dtype: Dtype,
    candidates: &[KernelSpec],
) -> TuneKey {
    let slugs: Vec<String> = candidates.iter().map(KernelSpec::slug).collect();
    let text = format!(
        "kernels={};kernel-gen={KERNEL_GEN_VERSION}",
        slugs.join(",")
    );
    TuneKey {
        op: "chunkwise".into(),
        device: device.into(),
        arch: arch.to_string(),
        hardware: hardware.into(),
        dtype: dtype.name().into(),
        bucket,
        checksum: format!("{:016x}", fnv1a64(text.as_bytes())),
    }
}

/// What the emulator's timings are called in cache keys: the GPU its roofline models.
pub fn emulated_hardware(arch: Arch) -> String {
    let gpu = match arch {
        Arch::Sm80 => "A100-80 SXM",
        Arch::Sm90 => "H100 SXM",
    };
    format!("ptx-emu roofline of the {gpu}")
}

/// The CPU's model name from `/proc/cpuinfo`, or the target architecture when unavailable.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| model_name(&text))
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The first `model name` line's value.
fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name" && !value.trim().is_empty()).then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(checksum: &str) -> TuneKey {
        TuneKey {
            op: "chunkwise".into(),
            device: "cpu".into(),
            arch: "x86_64".into(),
            hardware: "test cpu".into(),
            dtype: "bf16".into(),
            bucket: ShapeBucket::of(1, 1000, 8, 256, 512).unwrap(),
            checksum: checksum.into(),
        }
    }

    fn entry(checksum: &str, winner: usize) -> CacheEntry {
        CacheEntry {
            key: key(checksum),
            method: "test".into(),
            candidates: vec![CandidateTiming {
                chunk: winner,
                seconds: 1.0,
                runs: 3,
                kernel: None,
            }],
            winner,
            measured_at_unix: 0,
        }
    }

    #[test]
    fn buckets_round_up_to_powers_of_two() {
        let b = ShapeBucket::of(3, 1000, 10, 256, 500).unwrap();
        assert_eq!(
            (b.batch, b.seq_len, b.heads, b.dk, b.dv),
            (4, 1024, 16, 256, 512)
        );
        assert_eq!(ShapeBucket::of(1, 1024, 8, 64, 64).unwrap().seq_len, 1024);
        assert!(ShapeBucket::of(1, usize::MAX, 8, 64, 64).is_none());
    }

    #[test]
    fn reads_the_first_model_name() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(model_name(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(model_name("processor : 0\n"), None);
        assert_eq!(model_name("model name :   \n"), None);
    }

    #[test]
    fn the_checksum_names_the_candidates_and_the_kernel_version() {
        let a = candidate_checksum();
        assert_eq!(a.len(), 16);
        assert_eq!(a, candidate_checksum());
    }

    #[test]
    fn fnv_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn stale_entries_never_match_and_are_replaced() {
        let mut file = CacheFile::default();
        file.insert(entry("old", 32));
        assert!(file.lookup(&key("new")).is_none());
        assert_eq!(file.stale(&key("new")), 1);
        file.insert(entry("new", 64));
        assert_eq!(file.entries.len(), 1);
        assert_eq!(file.lookup(&key("new")).map(|e| e.winner), Some(64));
        assert_eq!(file.stale(&key("new")), 0);
    }

    #[test]
    fn corrupt_and_missing_files_give_no_winner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        assert!(matches!(load(&path), Loaded::Missing));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(load(&path), Loaded::Corrupt(_)));
        assert_eq!(cached_winner(&path, &key("x")), None);
        let mut file = CacheFile::default();
        file.insert(entry("x", 128));
        std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
        assert_eq!(cached_winner(&path, &key("x")), Some(128));
        assert_eq!(cached_winner(&path, &key("y")), None);
    }
}
