//! `retention verify` on a filtered slice of the catalog (emulated against the reference),
//! its failure exit code, its bad flags; and `retention info`.

mod support;

use kernel_gen::{Arch, catalog};
use support::{assert_one_line_error, ok_stdout, retention, retention_env};

/// Run verify on the sm_80 specs whose names contain `filter`; every one must be emulated
/// within tolerance with a predicted A100 time.
fn verify_slice(filter: &str, expected: usize) {
    let args = ["verify", "--arch", "sm_80", "--filter", filter];
    let stdout = ok_stdout(&args, &retention(&args));
    let want: Vec<String> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.arch == Arch::Sm80 && s.slug().contains(filter))
        .map(|s| s.slug())
        .collect();
    assert_eq!(want.len(), expected, "one spec per dtype and path");
    for slug in &want {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(slug.as_str()))
            .unwrap_or_else(|| panic!("no row for {slug}: {stdout}"));
        assert!(line.contains("ok (≤"), "{line}");
        assert!(line.contains("(A100)"), "predicted time missing: {line}");
    }
    assert!(
        stdout.contains(&format!(
            "{expected} specs: {expected} emulated and within tolerance, 0 not emulated, 0 failed"
        )),
        "{stdout}"
    );
}

#[test]
fn verify_emulates_decode_specs_within_tolerance() {
    verify_slice("decode_k64_v64_retnet8_", 3);
}

#[test]
fn verify_emulates_chunkwise_specs_within_tolerance() {
    verify_slice("chunkwise_k64_v64_c32_runtime_", 3);
}

#[test]
fn verify_emulates_parallel_specs_within_tolerance() {
    // The tensor-core tile (64) serves f16 and bf16; f32 uses tile 32.
    verify_slice("parallel_k64_v64_c64_runtime_", 2);
    verify_slice("parallel_k64_v64_c32_runtime_", 1);
}

#[test]
fn verify_emulates_chunkwise_backward_specs_within_tolerance() {
    // dq, dk and dv of every dtype (each check runs all three kernels), on the FMA kernels
    // and, f16 and bf16, on the tensor-core ones.
    verify_slice("chunkwise_bwd_dq_k64_v64_c32_runtime_", 5);
}

#[test]
fn verify_emulates_parallel_backward_specs_within_tolerance() {
    // The dq pass of every dtype (each check runs all four passes), and d log γ's rows.
    verify_slice("parallel_backward_dq_k64_v64_c32_runtime_", 3);
    verify_slice("parallel_backward_dlog_gamma_k64_v64_c32_runtime_", 3);
}

#[test]
fn verify_emulates_epilogue_specs_within_tolerance() {
    // The forward and the backward kernel of every dtype at V = 128.
    verify_slice("epilogue_k128_v128_runtime_", 3);
    verify_slice("epilogue_backward_k128_v128_runtime_", 3);
}

#[test]
fn verify_emulates_varlen_specs_within_tolerance() {
    verify_slice("chunkwise_varlen_k64_v64_c32_runtime_", 3);
}

#[test]
fn verify_emulates_both_two_phase_ops_within_tolerance() {
    verify_slice("chunk_states_k64_v64_c32_runtime_", 3);
    verify_slice("chunkwise_segmented_k64_v64_c32_runtime_", 3);
}

#[test]
fn verify_says_when_ptxas_is_missing_and_fails_when_it_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "verify",
        "--arch",
        "sm_90",
        "--filter",
        "decode_k64_v64_retnet8_f32",
    ];
    let out = retention_env(
        &args,
        &[
            ("PATH", dir.path()),
            ("RETENTION_PTXAS", &dir.path().join("none")),
        ],
    );
    let stdout = ok_stdout(&args, &out);
    assert!(stdout.contains("ptxas: not found"), "{stdout}");
    // A "ptxas" that rejects everything: every row fails and the exit code is 1.
    let out = retention_env(
        &args,
        &[("RETENTION_PTXAS", std::path::Path::new("/bin/false"))],
    );
    assert_one_line_error(&args, &out, 1, "verify failed: 1 of 1 kernels failed");
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL: ptxas"));
}

#[test]
fn verify_reports_ptxas_figures_when_ptxas_is_installed() {
    // The ptxas lane runs where `scripts/install-ptxas.sh` (or a CUDA toolkit) provided one.
    let Some(ptxas) = kernel_gen::ptxas::find_ptxas() else {
        eprintln!("ptxas not found: skipping the ptxas lane of verify");
        return;
    };
    let args = [
        "verify",
        "--arch",
        "sm_80",
        "--filter",
        "decode_k64_v64_retnet8_f32",
    ];
    let stdout = ok_stdout(&args, &retention_env(&args, &[("RETENTION_PTXAS", &ptxas)]));
    assert!(stdout.contains("all assembled by ptxas"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("decode_k64_v64_retnet8_f32_sm_80"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    let registers: u32 = cells[1].parse().unwrap_or_else(|_| panic!("{row}"));
    assert!(registers > 0 && registers <= 255, "{row}");
    assert_eq!(cells[2], "0", "spills: {row}");
}

#[test]
fn verify_rejects_bad_flags() {
    let args = ["verify", "--arch", "sm_70"];
    assert_one_line_error(&args, &retention(&args), 2, "sm_70");
    let args = ["verify", "--filter", "no_such_kernel"];
    assert_one_line_error(&args, &retention(&args), 2, "no catalog kernel matches");
}

#[test]
fn info_lists_devices_catalog_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["info"];
    let out = retention_env(&args, &[("RETENTION_CACHE_DIR", dir.path())]);
    let stdout = ok_stdout(&args, &out);
    assert!(stdout.contains("  cpu: "), "{stdout}");
    assert!(stdout.contains("  cuda: "), "{stdout}");
    let n = catalog::default_catalog().len();
    assert!(
        stdout.contains(&format!("kernel catalog: {n} specs")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!(
        "autotune cache: {}",
        dir.path().join("autotune.json").display()
    )));
    assert!(stdout.contains("no cache file yet"), "{stdout}");

    // After tuning, the entry is listed; a corrupt file is reported, not fatal.
    let tune = [
        "autotune",
        "--heads",
        "1",
        "--dk",
        "8",
        "--dv",
        "8",
        "--seq-len",
        "32",
        "--quick",
    ];
    ok_stdout(
        &tune,
        &retention_env(&tune, &[("RETENTION_CACHE_DIR", dir.path())]),
    );
    let stdout = ok_stdout(
        &args,
        &retention_env(&args, &[("RETENTION_CACHE_DIR", dir.path())]),
    );
    assert!(stdout.contains("1 entry"), "{stdout}");
    assert!(stdout.contains("B=1 T=32 H=1 K=8 V=8: chunk"), "{stdout}");
    assert!(stdout.contains("(current)"), "{stdout}");
    std::fs::write(dir.path().join("autotune.json"), "[]").unwrap();
    let stdout = ok_stdout(
        &args,
        &retention_env(&args, &[("RETENTION_CACHE_DIR", dir.path())]),
    );
    assert!(stdout.contains("corrupt"), "{stdout}");
}
