//! Every decode-step variant of the catalog, run as emitted PTX in the emulator, matches the
//! f64 reference (`retention_check::decode`, the same check `retention
//! verify` runs): f32 outputs ≤ 1e-5 relative, f16/bf16 outputs relative RMSE ≤ 5e-3, the f32
//! state ≤ 1e-5 relative, untouched slots bit-identical, over two steps with scrambled slots
//! and a non-default scale.
//!
//! CI runs a fixed subset that touches every (K, V), dtype and gamma set (every spec whose
//! emulated work is under a budget, which keeps all runtime-γ shapes and the small shapes of
//! every named set); `RETENTION_FULL_SWEEP=1` runs the whole catalog.

use kernel_gen::emu::Module;
use kernel_gen::{Arch, KernelOp, KernelSpec, catalog, emit_ptx};
use retention_check::decode;

/// Emulated state elements (rows × heads × K × V) a spec may cost in the CI sample.
const CI_BUDGET: usize = 800_000;

/// PTX text without the `.version`/`.target` lines, which are all that can differ between
/// the archs' bodies.
fn body(ptx: &str) -> String {
    ptx.lines()
        .filter(|l| {
            let l = l.trim_start();
            !l.starts_with(".target") && !l.starts_with(".version")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_decode_variant_matches_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::Decode)
        .collect();
    let mut ran = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if !full && decode::cost(spec) > CI_BUDGET {
            continue;
        }
        let ptx = emit_ptx(spec).unwrap();
        if spec.arch != Arch::ALL[0] && !full {
            // Another arch: emulate only when its body differs from the first arch's.
            let mut twin = *spec;
            twin.arch = Arch::ALL[0];
            if body(&emit_ptx(&twin).unwrap()) == body(&ptx) {
                continue;
            }
        }
        let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        let check = decode::check(spec, &module, 1000 + i as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        if let Some(why) = check.failure(spec.dtype) {
            panic!("{}: {why}", spec.slug());
        }
        ran.push(*spec);
    }
    // The sample touches every (K, V), every dtype and every gamma set.
    for spec in &specs {
        assert!(
            ran.iter().any(|r| (r.k, r.v) == (spec.k, spec.v)),
            "no run for K={} V={}",
            spec.k,
            spec.v
        );
        assert!(ran.iter().any(|r| r.dtype == spec.dtype));
        assert!(
            ran.iter().any(|r| r.gammas == spec.gammas),
            "no run for {}",
            spec.gammas.name()
        );
    }
    println!("emulated {} of {} decode variants", ran.len(), specs.len());
}

#[test]
fn every_catalog_ptx_parses_with_supported_instructions_only() {
    for spec in catalog::default_catalog() {
        let ptx = emit_ptx(&spec).unwrap();
        let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        assert!(
            module.entries().contains(&spec.entry().as_str()),
            "{}",
            spec.slug()
        );
    }
}

/// The check itself can fail: a kernel run with the wrong decays (another spec's entry
/// emulated under this spec's name is impossible, so corrupt the scale instead) is caught.
#[test]
fn the_decode_check_rejects_a_wrong_kernel() {
    let spec = catalog::default_catalog()
        .into_iter()
        .find(|s| s.op == KernelOp::Decode && s.k == 64 && s.v == 64)
        .unwrap();
    // Patch the emitted PTX so the kernel ignores the scale parameter's value: multiply by
    // a different immediate. Any real codegen slip of this kind must fail the check.
    let ptx = emit_ptx(&spec).unwrap();
    let scale_load = ptx
        .lines()
        .find(|l| l.contains("ld.param.f32"))
        .expect("the decode kernel loads its scale");
    let reg = scale_load
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(',')
        .to_string();
    let broken = ptx.replace(
        scale_load,
        &format!("\tmov.f32 {reg}, 0f3F800000; // scale forced to 1"),
    );
    let module = Module::parse(&broken).unwrap();
    let check = decode::check(&spec, &module, 7).unwrap();
    assert!(
        check.failure(spec.dtype).is_some(),
        "a kernel ignoring the scale passed: o error {:e}",
        check.o_error
    );
}
