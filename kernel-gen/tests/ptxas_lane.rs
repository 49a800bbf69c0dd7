//! The ptxas lane (ARCHITECTURE §4.1): every catalog variant assembles for its arch (sm_80 and
//! sm_90) with zero errors and zero spills. Skips with a notice when ptxas is not found
//! (`RETENTION_PTXAS` or `PATH`; `scripts/install-ptxas.sh` installs it).

use std::collections::BTreeMap;

use kernel_gen::catalog::default_catalog;
use kernel_gen::ptxas::{assemble_all, find_ptxas};
use kernel_gen::{Arch, emit_ptx};

#[test]
fn every_catalog_variant_assembles_without_spills() {
    let Some(ptxas) = find_ptxas() else {
        eprintln!(
            "notice: ptxas not found (set RETENTION_PTXAS or put it on PATH); ptxas lane skipped"
        );
        return;
    };
    let specs = default_catalog();
    for arch in Arch::ALL {
        assert!(
            specs.iter().any(|s| s.arch == arch),
            "catalog misses {arch}"
        );
    }
    let modules: Vec<(String, Arch)> = specs
        .iter()
        .map(|s| (emit_ptx(s).unwrap(), s.arch))
        .collect();
    let results = assemble_all(&ptxas, &modules);
    let mut failures = Vec::new();
    let mut table: BTreeMap<(Arch, &str), (u32, u32, u32)> = BTreeMap::new();
    for (spec, result) in specs.iter().zip(results) {
        match result {
            Err(e) => failures.push(format!("{spec}: {e}")),
            Ok(info) if info.spills() || info.stack_frame_bytes > 0 => failures.push(format!(
                "{spec}: spills {} B stored / {} B loaded, stack {} B",
                info.spill_store_bytes, info.spill_load_bytes, info.stack_frame_bytes
            )),
            Ok(info) => {
                assert!(info.registers > 0, "{spec}: no register count parsed");
                let e = table
                    .entry((spec.arch, spec.dtype.name()))
                    .or_insert((u32::MAX, 0, 0));
                *e = (
                    e.0.min(info.registers),
                    e.1.max(info.registers),
                    e.2.max(info.shared_bytes),
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} variants failed:\n{}",
        failures.len(),
        specs.len(),
        failures.join("\n")
    );
    eprintln!(
        "ptxas {}: {} variants, 0 errors, 0 spills",
        ptxas.display(),
        specs.len()
    );
    eprintln!("arch   dtype  regs(min-max)  max smem B");
    for ((arch, dtype), (lo, hi, smem)) in table {
        eprintln!(
            "{:<6} {dtype:<6} {lo:>3}-{hi:<3}        {smem}",
            arch.name()
        );
    }
}
