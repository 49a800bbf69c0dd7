//! The decode kernel on chosen problems (rows in scattered slots of a larger pool, custom
//! decays and scales, tile variants, the 1.3b head at batch 1) through the one decode check
//! (`retention_check::decode::check_case`), held to its tolerances (ARCHITECTURE §4).

use kernel_gen::emu::{EmuReport, Module};
use kernel_gen::{Arch, GammaSet, KernelSpec, TileConfig, emit_ptx};
use retention_check::decode::{DecodeCase, check_case};
use retention_core::{Dtype, Gammas};

/// Emulate `spec` on `case`; assert it is within tolerance; return the last launch's report.
fn run(spec: &KernelSpec, case: &DecodeCase) -> EmuReport {
    let ptx = emit_ptx(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let check = check_case(spec, &module, case, 7 + spec.hash64())
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    if let Some(why) = check.failure(spec.dtype) {
        panic!("{spec} {case:?}: {why}");
    }
    check
        .report
        .and_then(|r| r.emulated().cloned())
        .expect("an emulated report")
}

#[test]
fn named_retnet8_f16_matches_the_reference() {
    let spec = KernelSpec::decode(
        64,
        64,
        GammaSet::Retnet { heads: 8 },
        Dtype::F16,
        Arch::Sm80,
    );
    let case = DecodeCase {
        rows: 3,
        gammas: Gammas::retnet(8).unwrap(),
        slots: vec![2, 0, 3],
        capacity: 4,
        scale: 0.125,
    };
    run(&spec, &case);
}

#[test]
fn runtime_gamma_bf16_and_f32_match_the_reference() {
    // 0.3 takes the ex2 branch, 1 - 2^-20 the near-one polynomial.
    let gammas = Gammas::from_list(vec![0.3, 1.0 - 2f64.powi(-20)]).unwrap();
    for (k, v, dtype) in [(64, 128, Dtype::Bf16), (128, 128, Dtype::F32)] {
        let spec = KernelSpec::decode(k, v, GammaSet::Runtime, dtype, Arch::Sm90);
        let case = DecodeCase {
            rows: 2,
            gammas: gammas.clone(),
            slots: vec![1, 0],
            capacity: 3,
            scale: -0.7,
        };
        run(&spec, &case);
    }
}

#[test]
fn tile_variants_match_the_reference() {
    // Fewer threads than K (q/k staged in several passes), fewer than V (several outputs per
    // thread), one row group (R = 1), and 1, 2 or 8 rows per step.
    let gammas = Gammas::from_list(vec![0.9, 0.999]).unwrap();
    for (k, v, threads, rows_per_step) in [
        (128, 64, 64, 2),
        (64, 512, 128, 8),
        (256, 128, 1024, 1),
        (64, 256, 512, 4),
    ] {
        let spec = KernelSpec {
            tile: TileConfig {
                threads,
                rows_per_step,
            },
            ..KernelSpec::decode(k, v, GammaSet::Runtime, Dtype::F16, Arch::Sm80)
        };
        if let Some(ptxas) = kernel_gen::ptxas::find_ptxas() {
            let info =
                kernel_gen::ptxas::assemble(&ptxas, &emit_ptx(&spec).unwrap(), spec.arch).unwrap();
            assert!(!info.spills(), "{spec}: {info:?}");
        }
        let case = DecodeCase {
            rows: 2,
            gammas: gammas.clone(),
            slots: vec![0, 1],
            capacity: 2,
            scale: 0.3,
        };
        run(&spec, &case);
    }
}

#[test]
fn one_row_of_a_1p3b_layer_fills_the_grid() {
    // Batch 1 of the 1.3b model (H = 8, K = 256, V = 512, bf16).
    let spec = KernelSpec::decode(
        256,
        512,
        GammaSet::Retnet { heads: 8 },
        Dtype::Bf16,
        Arch::Sm90,
    );
    let case = DecodeCase {
        rows: 1,
        gammas: Gammas::retnet(8).unwrap(),
        slots: vec![0],
        capacity: 1,
        scale: 0.0625,
    };
    let report = run(&spec, &case);
    // 8 CTAs before the value split; now 16 slices of W = 32 columns each.
    assert_eq!(report.grid, [1, 8, 16]);
    assert_eq!(report.shared_bank_conflicts, 0);
}
