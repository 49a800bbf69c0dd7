//! `retention autotune`: sweep the chunk size of the CPU chunkwise kernel on a shape bucket
//! (median wall time), or the catalog's chunkwise variants in the emulator (predicted GPU
//! time, labelled so); keep every candidate's timing in the autotune cache, and reuse it on the
//! next run. `--device cuda` is a one-line error until the runtime launches catalog kernels.

pub use retention_runtime::autotune_cache as cache;
mod emulated;
mod sweep;
mod tuner;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use kernel_gen::Arch;

use crate::device_arg::DeviceArg;
use crate::dtype_arg::DtypeArg;
use crate::error::CliError;
use crate::model_arg::{ModelArgs, positive_count};
use crate::output_file::{check_writable, write_atomic};
use crate::verify::parse_arch;
pub use cache::candidate_checksum;
use cache::{
    CACHE_FILE, CHUNK_CANDIDATES, CacheEntry, CacheFile, CandidateTiming, Loaded, ShapeBucket,
    TuneKey,
};
use tuner::Tuner;

/// Flags of `retention autotune`.
#[derive(Debug, Args)]
pub struct AutotuneArgs {
    /// Device to tune for.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// The model whose per-layer shape is tuned.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per prefill call.
    #[arg(long, value_name = "T", value_parser = positive_count, default_value_t = 2048)]
    pub seq_len: usize,
    /// Sequences per prefill call.
    #[arg(long, value_name = "B", value_parser = positive_count, default_value_t = 1)]
    pub batch: usize,
    /// Input dtype.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    pub dtype: DtypeArg,
    /// List the candidates, the cache key and whether it is cached; time nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-time even when the cache holds a current result.
    #[arg(long)]
    pub retune: bool,
    /// Fewer repetitions per candidate.
    #[arg(long)]
    pub quick: bool,
    /// Architecture whose catalog kernels are tuned (`--device emulated` only; default sm_80).
    #[arg(long, value_name = "sm_80|sm_90", value_parser = parse_arch)]
    pub arch: Option<Arch>,
}

/// The key for the CPU chunkwise kernel on this machine.
pub fn cpu_chunkwise_key(bucket: ShapeBucket, dtype: DtypeArg) -> TuneKey {
    cache::cpu_chunkwise_key(bucket, dtype.dtype())
}

/// The cache file, or why there is none.
///
/// # Errors
/// [`CliError::BadFlag`] when no cache directory can be found.
pub fn cache_file() -> Result<PathBuf, CliError> {
    cache::cache_dir()
        .map(|d| d.join(CACHE_FILE))
        .ok_or_else(|| {
            CliError::BadFlag(
                "no cache directory: set RETENTION_CACHE_DIR, XDG_CACHE_HOME or HOME".into(),
            )
        })
}

fn print_key(key: &TuneKey, path: &Path) {
    let b = &key.bucket;
    println!("cache file: {}", path.display());
    println!(
        "key: op {} on {} ({}, {}), {}, bucket B={} T={} H={} K={} V={}, checksum {}",
        key.op,
        key.device,
        key.hardware,
        key.arch,
        key.dtype,
        b.batch,
        b.seq_len,
        b.heads,
        b.dk,
        b.dv,
        key.checksum
    );
}

fn print_entry(entry: &CacheEntry) {
    println!("{:>6}  {:>12}  {:>5}  kernel", "chunk", "seconds", "runs");
    let best = entry
        .candidates
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .map(|c| c.seconds);
    for c in &entry.candidates {
        let mark = if Some(c.seconds) == best && c.chunk == entry.winner {
            "  <- winner"
        } else {
            ""
        };
        println!(
            "{:>6}  {:>12}  {:>5}  {}{mark}",
            c.chunk,
            crate::bench::duration(c.seconds),
            c.runs,
            c.kernel.as_deref().unwrap_or("cpu chunkwise")
        );
    }
    println!("winner: chunk {} ({})", entry.winner, entry.method);
}

/// Run the subcommand.
///
/// # Errors
/// A device that cannot be tuned here, no cache directory, or an unwritable cache.
pub fn execute(args: &AutotuneArgs) -> Result<(), CliError> {
    let tuner = Tuner::new(args)?;
    let key = tuner.key();
    let path = cache_file()?;
    print_key(&key, &path);

    if !args.dry_run {
        // Fail before reading or timing anything when a result could not be kept.
        preflight(&path)?;
    }
    let mut file = match cache::load(&path) {
        Loaded::Missing => CacheFile::default(),
        Loaded::Valid(f) => f,
        Loaded::Corrupt(why) => {
            eprintln!(
                "warning: autotune cache `{}` is corrupt ({}); rebuilding it",
                path.display(),
                crate::one_line(&why)
            );
            CacheFile::default()
        }
    };
    let stale = file.stale(&key);
    if stale > 0 {
        println!(
            "ignoring {stale} stale entr{} for this shape (candidate set or kernel version changed)",
            if stale == 1 { "y" } else { "ies" }
        );
    }
    if args.dry_run {
        println!("candidates: {}", tuner.candidate_names().join(", "));
        match file.lookup(&key) {
            Some(e) => println!("cached: winner chunk {} (dry run: nothing timed)", e.winner),
            None => println!("not cached (dry run: nothing timed or written)"),
        }
        return Ok(());
    }
    if !args.retune
        && let Some(entry) = file.lookup(&key)
    {
        println!("cache hit: read from the cache, not re-timed");
        print_entry(entry);
        return Ok(());
    }

    let b = &key.bucket;
    println!(
        "timing {} candidates on B={} T={} H={} K={} V={} ({}): {}",
        tuner.candidate_names().len(),
        b.batch,
        b.seq_len,
        b.heads,
        b.dk,
        b.dv,
        key.dtype,
        tuner.method()
    );
    let candidates = tuner.run()?;
    let winner = fastest(&candidates);
    let entry = CacheEntry {
        key,
        method: tuner.method().into(),
        candidates,
        winner,
        measured_at_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    print_entry(&entry);
    let key = entry.key.clone();
    file.insert(entry);
    store(&path, &file)?;
    // Read back through the runtime's lookup, so a cache it cannot use is caught here.
    match cache::cached_winner(&path, &key) {
        Some(w) if w == winner => {
            println!("saved to {} (read back: chunk {w})", path.display());
            Ok(())
        }
        other => Err(CliError::WriteCache {
            path,
            reason: format!("read back {other:?} instead of chunk {winner}"),
        }),
    }
}

/// The chunk with the smallest median (the first on a tie).
fn fastest(candidates: &[CandidateTiming]) -> usize {
    candidates
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .map_or(CHUNK_CANDIDATES[0], |c| c.chunk)
}

fn cache_error(path: &Path, reason: &dyn std::fmt::Display) -> CliError {
    CliError::WriteCache {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Create the cache directory and check a file can be written there.
fn preflight(path: &Path) -> Result<(), CliError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, &e))?;
    }
    check_writable(path).map_err(|e| match e {
        CliError::WriteOutput { reason, .. } => cache_error(path, &reason),
        other => other,
    })
}

fn store(path: &Path, file: &CacheFile) -> Result<(), CliError> {
    let fail = cache_error;
    let json = serde_json::to_string_pretty(file).map_err(|e| fail(path, &e))?;
    write_atomic(path, format!("{json}\n").as_bytes()).map_err(|e| match e {
        CliError::WriteOutput { reason, .. } => fail(path, &reason),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_candidate_wins() {
        let c = |chunk, seconds| CandidateTiming {
            chunk,
            seconds,
            runs: 3,
            kernel: None,
        };
        assert_eq!(fastest(&[c(16, 3.0), c(32, 1.0), c(64, 2.0)]), 32);
        assert_eq!(fastest(&[c(16, 1.0), c(32, 1.0)]), 16);
    }
}
