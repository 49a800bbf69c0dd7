//! `retention info`: the devices found, the kernel catalog, ptxas, and the autotune cache's
//! location and contents.

use std::collections::BTreeMap;

use clap::Args;
use kernel_gen::{catalog, ptxas};
use retention_runtime::Device;
use retention_runtime::cuda::{CudaBackend, device_count};

use crate::autotune::{self, cache};
use crate::host_info;

/// Flags of `retention info` (none yet).
#[derive(Debug, Args)]
pub struct InfoArgs {}

fn cuda_lines() -> Vec<String> {
    let count = device_count();
    if count == 0 {
        // The runtime says why: no driver, failed initialisation, or no GPU.
        let why = match Device::from_name("cuda") {
            Err(e) => e.to_string(),
            Ok(_) => "the driver reports no device".into(),
        };
        return vec![format!("cuda: none ({why})")];
    }
    let mut lines = vec![format!("cuda: {count} device(s)")];
    for ordinal in 0..count {
        let line = match CudaBackend::new(ordinal) {
            Ok(gpu) => {
                let name = gpu.name().unwrap_or_else(|e| format!("name unknown: {e}"));
                let cc = gpu.compute_capability().map_or_else(
                    |e| format!("compute capability unknown: {e}"),
                    |(a, b)| format!("sm_{a}{b}"),
                );
                format!("  cuda:{ordinal}: {name} ({cc})")
            }
            Err(e) => format!("  cuda:{ordinal}: cannot open ({e})"),
        };
        lines.push(line);
    }
    lines
}

fn catalog_line() -> String {
    let specs = catalog::default_catalog();
    let mut by_op: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_arch: BTreeMap<String, usize> = BTreeMap::new();
    for s in &specs {
        *by_op.entry(s.op.name()).or_default() += 1;
        *by_arch.entry(s.arch.to_string()).or_default() += 1;
    }
    let join = |m: Vec<String>| m.join(", ");
    format!(
        "kernel catalog: {} specs ({}; {})",
        specs.len(),
        join(by_op.iter().map(|(op, n)| format!("{op} {n}")).collect()),
        join(by_arch.iter().map(|(a, n)| format!("{a} {n}")).collect())
    )
}

fn cache_lines() -> Vec<String> {
    let path = match autotune::cache_file() {
        Ok(p) => p,
        Err(e) => return vec![format!("autotune cache: none ({e})")],
    };
    let mut lines = vec![format!("autotune cache: {}", path.display())];
    match cache::load(&path) {
        cache::Loaded::Missing => {
            lines.push("  no cache file yet (`retention autotune` creates it)".into());
        }
        cache::Loaded::Corrupt(why) => lines.push(format!(
            "  corrupt ({}); `retention autotune` rebuilds it",
            crate::one_line(&why)
        )),
        cache::Loaded::Valid(file) => {
            lines.push(format!(
                "  {} entr{}",
                file.entries.len(),
                if file.entries.len() == 1 { "y" } else { "ies" }
            ));
            for e in &file.entries {
                let k = &e.key;
                let b = &k.bucket;
                // Only the CPU's candidate set is known without the model's head count.
                let state = if k.device != "cpu" {
                    e.method.as_str()
                } else if autotune::candidate_checksum() == k.checksum {
                    "current"
                } else {
                    "stale"
                };
                lines.push(format!(
                    "  {} on {} ({}), {}, B={} T={} H={} K={} V={}: chunk {} of {} candidates ({state})",
                    k.op,
                    k.device,
                    k.hardware,
                    k.dtype,
                    b.batch,
                    b.seq_len,
                    b.heads,
                    b.dk,
                    b.dv,
                    e.winner,
                    e.candidates.len()
                ));
            }
        }
    }
    lines
}

/// Run the subcommand (it reports problems it finds rather than failing on them).
pub fn execute(_args: &InfoArgs) {
    println!("retention {}", env!("CARGO_PKG_VERSION"));
    println!("devices:");
    println!(
        "  cpu: {} ({})",
        host_info::describe_cpu(),
        std::env::consts::ARCH
    );
    for line in cuda_lines() {
        println!("  {line}");
    }
    println!(
        "  emulated: the PTX emulator (sm_80, sm_90): `--device emulated` for run, bench and \
         autotune (predicted times), and `retention verify`"
    );
    println!("{}", catalog_line());
    match ptxas::find_ptxas() {
        Some(p) => println!("ptxas: {}", p.display()),
        None => println!("ptxas: not found (set RETENTION_PTXAS or put ptxas on PATH)"),
    }
    for line in cache_lines() {
        println!("{line}");
    }
}
