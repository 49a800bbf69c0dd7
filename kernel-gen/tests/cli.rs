//! The `kernel-gen` binary: catalog files, manifest and exit codes.

use std::path::PathBuf;
use std::process::Command;

use kernel_gen::manifest::Manifest;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kernel-gen-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn writes_filtered_catalog_and_manifest() {
    let dir = out_dir("filter");
    let status = Command::new(env!("CARGO_BIN_EXE_kernel-gen"))
        .args([
            "--out",
            dir.to_str().unwrap(),
            "--arch",
            "sm_90",
            "--filter",
            "k64_v128_",
            "--no-ptxas",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    // K = 64, V = 128 on sm_90: 3 dtypes x 5 gamma sets.
    assert_eq!(manifest.kernels.len(), 15);
    for e in &manifest.kernels {
        assert_eq!((e.spec.k, e.spec.v, e.spec.arch.name()), (64, 128, "sm_90"));
        assert!(e.ptxas.is_none());
        assert_eq!(e.entry, e.spec.entry());
        assert_eq!(e.hash, format!("{:016x}", e.spec.hash64()));
        let ptx = std::fs::read_to_string(dir.join(&e.file)).unwrap();
        assert!(ptx.contains(&format!(".entry {}(", e.entry)));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_ptxas_figures_when_ptxas_is_found() {
    if kernel_gen::ptxas::find_ptxas().is_none() {
        eprintln!("notice: ptxas not found; manifest register figures not checked");
        return;
    }
    let dir = out_dir("ptxas");
    let status = Command::new(env!("CARGO_BIN_EXE_kernel-gen"))
        .args([
            "--out",
            dir.to_str().unwrap(),
            "--filter",
            "k128_v256_retnet16_f16",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.kernels.len(), 2, "one per arch");
    for e in &manifest.kernels {
        let info = e.ptxas.expect("ptxas figures");
        assert!(info.registers > 0 && !info.spills());
        assert_eq!(
            info.shared_bytes,
            128 * 4 * 2 + 256 * 16,
            "s_q + s_k + s_part"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_fail() {
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-gen"))
        .args(["--out", "/nonexistent-dir-for-test", "--arch", "sm_75"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sm_75"));
}
