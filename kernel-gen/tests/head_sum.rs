//! The `head_sum` kernel (the per-head sum of f32 partials `[R, H, M]` into `[H]`) run in the
//! emulator against the f64 sum: within 1e-6 of Σ|x| per head (its documented bound, well
//! inside the backward's 1e-5 of Σ|terms|) on partials that cancel across nine orders of
//! magnitude, M not a multiple of 256, and the accumulate mode adding to what `out` holds.

use kernel_gen::emu::{Buffer, Launch, Module, Param};
use kernel_gen::{Arch, KernelSpec, emit_ptx, launch_geometry};
use retention_core::SplitMix64;

/// Sums of `partials` `[rows, heads, per]` per head, added to `out` when `accumulate`.
fn run(
    arch: Arch,
    partials: &[f32],
    (rows, heads, per): (u32, u32, u32),
    out: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    let spec = KernelSpec::head_sum(arch);
    let module = Module::parse(&emit_ptx(&spec).unwrap()).unwrap();
    let g = launch_geometry(&spec, rows, heads).unwrap();
    assert_eq!(g.grid, [heads, 1, 1]);
    let mut launch = Launch::new(spec.entry(), g.grid, g.block)
        .arg(Param::Buffer(Buffer::from_f32(partials)))
        .arg(Param::U32(rows))
        .arg(Param::U32(per))
        .arg(Param::Buffer(Buffer::from_f32(out).output()))
        .arg(Param::U32(u32::from(accumulate)));
    let report = module.launch(&mut launch).unwrap();
    assert_eq!(report.shared_uninit_reads, 0);
    launch.buffer(3).unwrap().to_f32()
}

/// Partials of magnitudes 1e-4 .. 1e5 with both signs, so the sum cancels.
fn partials(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    rng.vec(n)
        .into_iter()
        .enumerate()
        .map(|(i, x)| (x * 10f64.powi((i % 10) as i32 - 4)) as f32)
        .collect()
}

fn exact(p: &[f32], (rows, heads, per): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let (mut sum, mut abs) = (vec![0.0; heads], vec![0.0; heads]);
    for r in 0..rows {
        for h in 0..heads {
            for &x in &p[(r * heads + h) * per..][..per] {
                sum[h] += f64::from(x);
                abs[h] += f64::from(x).abs();
            }
        }
    }
    (sum, abs)
}

#[test]
fn sums_per_head_within_1e6_of_the_magnitudes() {
    for (arch, dims) in [
        (Arch::Sm80, (3, 5, 300)),
        (Arch::Sm90, (40, 2, 512)),
        (Arch::Sm80, (1, 1, 1)),
        (Arch::Sm90, (300, 1, 256)),
    ] {
        let (r, h, m) = dims;
        let p = partials(r * h * m, r as u64);
        let got = run(
            arch,
            &p,
            (r as u32, h as u32, m as u32),
            &vec![7.0; h],
            false,
        );
        let (want, abs) = exact(&p, dims);
        for i in 0..h {
            let e = (f64::from(got[i]) - want[i]).abs() / abs[i];
            eprintln!(
                "{dims:?} head {i}: {} vs {} ({e:.2e} of Σ|x|)",
                got[i], want[i]
            );
            assert!(e <= 1e-6, "{dims:?} head {i}: {e:e}");
        }
    }
}

#[test]
fn accumulate_adds_to_out() {
    let dims = (2, 3, 257);
    let p = partials(2 * 3 * 257, 9);
    let before = [1.5f32, -2.0, 1e3];
    let got = run(Arch::Sm90, &p, (2, 3, 257), &before, true);
    let (want, abs) = exact(&p, dims);
    for i in 0..3 {
        let w = want[i] + f64::from(before[i]);
        let e = (f64::from(got[i]) - w).abs() / (abs[i] + f64::from(before[i]).abs());
        assert!(e <= 1e-6, "head {i}: {} vs {w}", got[i]);
    }
}

#[test]
fn other_specs_are_refused() {
    let spec = KernelSpec {
        k: 2,
        ..KernelSpec::head_sum(Arch::Sm80)
    };
    assert!(spec.validate().is_err());
    assert!(launch_geometry(&KernelSpec::head_sum(Arch::Sm80), 1, 0).is_err());
}
