//! The gated MSR epilogue's kernels (forward and backward) on the emulator against the f64
//! reference through the one epilogue check (`retention_check::epilogue`), for every dtype,
//! sm_80 and sm_90, and V ∈ {24, 60, 64, 100, 256, 512} plus 30 (two columns per lane) and
//! 17 (scalar accesses): tolerances of ARCHITECTURE §4 on every output, no emulator fault
//! (bounds, races), and global traffic equal to the minimum — each input element read once,
//! each output element written once.

use kernel_gen::{Arch, KernelSpec};
use retention_check::EmuCheck;
use retention_check::epilogue::{cases, run_case};
use retention_core::Dtype;
use retention_runtime::launch_target::Emulator;

const VALUES: [u32; 8] = [24, 60, 64, 100, 256, 512, 30, 17];

fn check_all(spec: &KernelSpec) {
    let target = Emulator(spec.arch);
    let tol = EmuCheck::o_tolerance(spec.dtype);
    for (i, case) in cases().iter().enumerate() {
        let run = run_case(spec, &target, case, 11 + i as u64 + spec.hash64())
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        for (name, err) in &run.errors {
            assert!(
                *err <= tol,
                "{spec} {case:?}: {name} error {err:.2e} > {tol:.0e}"
            );
        }
        let r = run.report.emulated().expect("an emulated report");
        assert_eq!(
            r.global_bytes_read, run.min_bytes_read,
            "{spec} {case:?}: bytes read"
        );
        assert_eq!(
            r.global_bytes_written, run.min_bytes_written,
            "{spec} {case:?}: bytes written"
        );
        assert_eq!(r.shared_uninit_reads, 0, "{spec}");
    }
}

fn sweep(backward: bool) {
    for arch in Arch::ALL {
        for dtype in Dtype::ALL {
            for v in VALUES {
                let spec = KernelSpec::epilogue(v, dtype, arch);
                check_all(&if backward {
                    spec.epilogue_backward()
                } else {
                    spec
                });
            }
        }
    }
}

#[test]
fn forward_matches_the_reference_with_minimal_traffic() {
    sweep(false);
}

#[test]
fn backward_matches_the_reference_with_minimal_traffic() {
    sweep(true);
}

#[test]
fn the_all_zero_row_gives_zeros_not_nan() {
    // The second case has eps = 0 and one all-zero row of o: the reference is exactly 0
    // there (r = 0), and so must every output of the kernel be, in every dtype.
    let case = cases()[1];
    assert_eq!(case.eps, 0.0);
    let zero = case.zero_row.expect("the eps = 0 case has an all-zero row");
    for dtype in Dtype::ALL {
        let spec = KernelSpec::epilogue(60, dtype, Arch::Sm80);
        for s in [spec, spec.epilogue_backward()] {
            let run = run_case(&s, &Emulator(s.arch), &case, 5).unwrap();
            for out in &run.outputs {
                assert!(
                    out[zero * 60..(zero + 1) * 60].iter().all(|&x| x == 0.0),
                    "{s}"
                );
                assert!(out.iter().all(|x| x.is_finite()), "{s}");
            }
        }
    }
}
