//! `retention autotune` on the CPU: the first run times every candidate and writes the cache;
//! the second reads it without re-timing; corrupt files are reported and rebuilt; stale entries
//! (another checksum) are ignored and replaced; `--dry-run` times and writes nothing.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{assert_one_line_error, entries, ok_stdout, retention_env};

const SHAPE: [&str; 9] = [
    "autotune",
    "--heads",
    "2",
    "--dk",
    "16",
    "--dv",
    "16",
    "--seq-len",
    "100",
];

fn autotune(cache: &Path, extra: &[&str]) -> (Vec<String>, std::process::Output) {
    let mut args: Vec<String> = SHAPE.iter().map(ToString::to_string).collect();
    args.push("--quick".into());
    args.extend(extra.iter().map(ToString::to_string));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = retention_env(&refs, &[("RETENTION_CACHE_DIR", cache)]);
    (args, out)
}

fn run_ok(cache: &Path, extra: &[&str]) -> (String, String) {
    let (args, out) = autotune(cache, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = ok_stdout(&refs, &out);
    (stdout, String::from_utf8(out.stderr).unwrap())
}

fn cache_json(cache: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(cache.join("autotune.json")).unwrap()).unwrap()
}

#[test]
fn a_second_run_reads_the_cache_without_re_timing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (first, _) = run_ok(&cache, &[]);
    assert!(first.contains("timing 5 candidates"), "{first}");
    let file = cache_json(&cache);
    assert_eq!(file["schema"], 1);
    let entries_ = file["entries"].as_array().unwrap();
    assert_eq!(entries_.len(), 1);
    let e = &entries_[0];
    let key = &e["key"];
    assert_eq!(key["op"], "chunkwise");
    assert_eq!(key["device"], "cpu");
    assert_eq!(key["dtype"], "bf16");
    // T = 100 falls in the 128 bucket; the other sizes are powers of two already.
    assert_eq!(key["bucket"]["seq_len"], 128);
    assert_eq!(key["bucket"]["heads"], 2);
    assert_eq!(key["checksum"].as_str().unwrap().len(), 16);
    // Every candidate is kept, and the winner is the fastest.
    let candidates = e["candidates"].as_array().unwrap();
    let chunks: Vec<u64> = candidates
        .iter()
        .map(|c| c["chunk"].as_u64().unwrap())
        .collect();
    assert_eq!(chunks, [16, 32, 64, 128, 256]);
    let fastest = candidates
        .iter()
        .min_by(|a, b| {
            a["seconds"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["seconds"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(e["winner"], fastest["chunk"]);
    assert!(candidates.iter().all(|c| c["runs"].as_u64().unwrap() >= 3));

    let before = std::fs::read(cache.join("autotune.json")).unwrap();
    let (second, _) = run_ok(&cache, &[]);
    assert!(
        second.contains("cache hit: read from the cache, not re-timed"),
        "{second}"
    );
    assert!(!second.contains("timing"), "{second}");
    assert!(
        second.contains(&format!("winner: chunk {}", e["winner"])),
        "{second}"
    );
    assert_eq!(std::fs::read(cache.join("autotune.json")).unwrap(), before);

    // Another bucket is a miss, and both entries are kept.
    let (other, _) = run_ok(&cache, &["--batch", "3"]);
    assert!(other.contains("timing 5 candidates on B=4"), "{other}");
    assert_eq!(cache_json(&cache)["entries"].as_array().unwrap().len(), 2);
    assert_eq!(entries(&cache), ["autotune.json"]);
}

#[test]
fn a_corrupt_cache_is_reported_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autotune.json"), "{\"schema\": 1, \"entr").unwrap();
    let (stdout, stderr) = run_ok(dir.path(), &[]);
    assert!(
        stderr.contains("is corrupt") && stderr.contains("rebuilding"),
        "{stderr}"
    );
    assert!(stdout.contains("timing 5 candidates"), "{stdout}");
    assert_eq!(
        cache_json(dir.path())["entries"].as_array().unwrap().len(),
        1
    );
    // A file of another schema version counts as corrupt too.
    std::fs::write(
        dir.path().join("autotune.json"),
        "{\"schema\": 99, \"entries\": []}",
    )
    .unwrap();
    let (_, stderr) = run_ok(dir.path(), &[]);
    assert!(stderr.contains("schema 99"), "{stderr}");
}

#[test]
fn stale_entries_are_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &[]);
    let path = dir.path().join("autotune.json");
    let mut file = cache_json(dir.path());
    let current = file["entries"][0]["key"]["checksum"].clone();
    file["entries"][0]["key"]["checksum"] = Value::from("0000000000000000");
    file["entries"][0]["winner"] = Value::from(999);
    std::fs::write(&path, serde_json::to_string(&file).unwrap()).unwrap();
    let (stdout, _) = run_ok(dir.path(), &[]);
    assert!(stdout.contains("ignoring 1 stale entry"), "{stdout}");
    assert!(stdout.contains("timing 5 candidates"), "{stdout}");
    let file = cache_json(dir.path());
    let list = file["entries"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["key"]["checksum"], current);
    assert_ne!(list[0]["winner"], 999);
}

#[test]
fn dry_run_lists_candidates_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, _) = run_ok(dir.path(), &["--dry-run"]);
    assert!(
        stdout.contains("candidates: chunk 16, chunk 32, chunk 64, chunk 128, chunk 256"),
        "{stdout}"
    );
    assert!(stdout.contains("not cached"), "{stdout}");
    assert!(!stdout.contains("timing"), "{stdout}");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // The cache directory is a file: caught before any timing.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let (args, out) = autotune(&file, &[]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_one_line_error(&refs, &out, 2, "cannot write autotune cache");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("timing"));
    for (extra, needle) in [
        (&["--device", "cuda"][..], "cuda"),
        (&["--batch", "0"][..], "at least 1"),
        (&["--dtype", "f8"][..], "f8"),
    ] {
        let (args, out) = autotune(dir.path(), extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_one_line_error(&refs, &out, 2, needle);
    }
    for (args, needle) in [
        (&["autotune", "--model", "3b"][..], "3b"),
        (&["autotune", "--seq-len", "0"][..], "at least 1"),
        (
            &["autotune", "--seq-len", "100000000000"][..],
            "the tuning problem needs",
        ),
        (
            &["autotune", "--seq-len", "18446744073709551615"][..],
            "too large",
        ),
        (
            &["autotune", "--heads", "0", "--dk", "4", "--dv", "4"][..],
            "at least 1",
        ),
    ] {
        let out = retention_env(args, &[("RETENTION_CACHE_DIR", dir.path())]);
        assert_one_line_error(args, &out, 2, needle);
    }
    assert_eq!(entries(dir.path()), ["file"]);
}

#[test]
fn emulated_tuning_ranks_catalog_kernels_by_predicted_time_and_caches_them() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "autotune",
        "--device",
        "emulated",
        "--arch",
        "sm_80",
        "--heads",
        "8",
        "--dk",
        "64",
        "--dv",
        "64",
        "--seq-len",
        "100",
        "--dtype",
        "f32",
    ];
    let env = [("RETENTION_CACHE_DIR", dir.path())];
    let first = ok_stdout(&args, &retention_env(&args, &env));
    assert!(first.contains("emulator predicted time"), "{first}");
    let file = cache_json(dir.path());
    let e = &file["entries"][0];
    assert_eq!(e["key"]["device"], "emulated:sm_80");
    assert!(e["method"].as_str().unwrap().contains("not a measurement"));
    let candidates = e["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 2, "{candidates:?}");
    for c in candidates {
        let kernel = c["kernel"].as_str().unwrap();
        assert!(
            kernel.starts_with("chunkwise_k64_v64_c") && kernel.ends_with("_retnet8_f32_sm_80")
        );
        assert!(c["seconds"].as_f64().unwrap() > 0.0);
    }
    let fastest = candidates
        .iter()
        .min_by(|a, b| {
            a["seconds"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["seconds"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(e["winner"], fastest["chunk"]);
    let second = ok_stdout(&args, &retention_env(&args, &env));
    assert!(second.contains("cache hit"), "{second}");

    // A head size the catalog has no kernel for; a model too large to emulate; --arch
    // without the emulator.
    let args = [
        "autotune",
        "--device",
        "emulated",
        "--heads",
        "2",
        "--dk",
        "48",
        "--dv",
        "48",
        "--seq-len",
        "64",
    ];
    assert_one_line_error(
        &args,
        &retention_env(&args, &env),
        2,
        "no catalog chunkwise kernel",
    );
    let args = ["autotune", "--device", "emulated", "--model", "1.3b"];
    assert_one_line_error(&args, &retention_env(&args, &env), 2, "too much to emulate");
    let args = [
        "autotune", "--arch", "sm_90", "--heads", "1", "--dk", "8", "--dv", "8",
    ];
    assert_one_line_error(&args, &retention_env(&args, &env), 2, "--device emulated");
}

#[test]
fn emulated_tuning_times_the_two_phase_forward_where_the_runtime_would_split() {
    // Two heads, 512 tokens: few (row, head) pairs, so the runtime's plan splits the sequence
    // for C = 32 and 64, and those splits are candidates beside the one-pass kernels.
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "autotune",
        "--device",
        "emulated",
        "--heads",
        "2",
        "--dk",
        "64",
        "--dv",
        "64",
        "--seq-len",
        "512",
        "--dtype",
        "bf16",
    ];
    let env = [("RETENTION_CACHE_DIR", dir.path())];
    let out = ok_stdout(&args, &retention_env(&args, &env));
    let file = cache_json(dir.path());
    let kernels: Vec<String> = file["entries"][0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kernel"].as_str().unwrap().to_string())
        .collect();
    for c in [32, 64] {
        assert!(
            kernels.contains(&format!(
                "chunkwise_segmented_k64_v64_c{c}_runtime_bf16_sm_80"
            )),
            "{kernels:?}\n{out}"
        );
    }
    assert!(kernels.contains(&"chunkwise_k64_v64_c64_runtime_bf16_sm_80".to_string()));
}
