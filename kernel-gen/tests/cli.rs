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
            "decode_k64_v128_",
            "--no-ptxas",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: Manifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    // K = 64, V = 128 on sm_90: 3 dtypes x 5 gamma sets x 2 value slices (the default 64
    // columns and the 128-column variant the decode plan picks for larger batches).
    assert_eq!(manifest.kernels.len(), 30);
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
            128 * 4 * 2 + 256 * 16 + 32 * 4 + 8,
            "s_q + s_k + s_part + s_v (a slice of W = 32 columns) + s_slot"
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

#[test]
fn emu_subcommand_runs_a_launch_file_and_writes_outputs() {
    use kernel_gen::{Arch, GammaSet, KernelSpec, emit_ptx, launch_geometry};
    let dir = out_dir("emu");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = KernelSpec::decode(
        64,
        64,
        GammaSet::Runtime,
        retention_core::Dtype::F32,
        Arch::Sm80,
    );
    std::fs::write(dir.join("k.ptx"), emit_ptx(&spec).unwrap()).unwrap();
    let f32s = |name: &str, v: &[f32]| {
        std::fs::write(
            dir.join(name),
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
    };
    // Zero state, q = k = 1: S' = kᵀv and o = s·(q·k)·v = 0.5·64·v, exact in f32.
    let v: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    f32s("q.bin", &[1.0; 64]);
    f32s("k.bin", &[1.0; 64]);
    f32s("v.bin", &v);
    f32s("state.bin", &[0.0; 64 * 64]);
    std::fs::write(dir.join("slots.bin"), 0u32.to_le_bytes()).unwrap();
    f32s("o.bin", &[0.0; 64]);
    f32s("log2g.bin", &[-0.5]);
    let geo = launch_geometry(&spec, 1, 1).unwrap();
    let launch = serde_json::json!({
        "entry": spec.entry(),
        "grid": geo.grid,
        "block": geo.block,
        "dynamic_shared_bytes": geo.dynamic_smem_bytes,
        "params": [
            {"file": "q.bin", "dtype": "f32", "len": 64},
            {"file": "k.bin", "dtype": "f32", "len": 64},
            {"file": "v.bin", "dtype": "f32", "len": 64},
            {"file": "state.bin", "dtype": "f32", "len": 4096, "output": true},
            {"file": "slots.bin", "dtype": "u32", "len": 1},
            {"file": "o.bin", "dtype": "f32", "len": 64, "output": true},
            {"type": "u32", "value": 1},
            {"type": "f32", "value": 0.5},
            {"type": "u32", "value": 1},
            {"file": "log2g.bin", "dtype": "f32", "len": 1}
        ]
    });
    std::fs::write(dir.join("launch.json"), launch.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-gen"))
        .arg("emu")
        .arg(dir.join("k.ptx"))
        .arg("--launch")
        .arg(dir.join("launch.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kernel"], spec.entry());
    let o: Vec<f32> = std::fs::read(dir.join("o.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let want: Vec<f32> = v.iter().map(|x| 32.0 * x).collect();
    assert_eq!(o, want);

    // A launch naming a missing entry: one line on stderr, exit code 2.
    let bad = launch.to_string().replace(&spec.entry(), "no_such_entry");
    std::fs::write(dir.join("bad.json"), bad).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kernel-gen"))
        .arg("emu")
        .arg(dir.join("k.ptx"))
        .arg("--launch")
        .arg(dir.join("bad.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .trim_end()
            .lines()
            .count(),
        1
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
