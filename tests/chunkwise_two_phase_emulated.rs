//! The two-phase chunkwise forward (phase 1 `chunk_states`, phase 2 `chunkwise_segmented`),
//! run as emitted PTX in the emulator through the runtime's catalog check
//! (`retention_check::two_phase`: launches sized by `two_phase_plan`, arguments filled by
//! `param_names`), matches the f64 reference `reference::chunkwise`: f32 o and H_T ≤ 1e-5
//! relative, f16/bf16 o relative RMSE ≤ 5e-3 (and near the dtype's own rounding), H_T ≤ 1e-5.
//!
//! Cases: T = 1 and T < C (one segment: phase 2 alone), several segments whose last one is
//! partial and ends in a partial chunk (with H0, two rows); for runtime γ also segments of
//! two chunks, with T a multiple of L and no H0 or H_T. CI emulates a fixed sample touching every (K, V), dtype
//! and gamma set; `RETENTION_FULL_SWEEP=1` emulates every two-phase pair of the catalog.

use kernel_gen::emu::Module;
use kernel_gen::{
    Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx, prefer_two_phase, two_phase_plan,
};
use retention_check::two_phase::{TwoPhaseCase, check_case};
use retention_core::Dtype;

fn module(spec: &KernelSpec) -> Module {
    Module::parse(&emit_ptx(spec).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()))
}

/// The cases every emulated pair runs.
fn cases(spec: &KernelSpec) -> Vec<TwoPhaseCase> {
    let c = spec.chunk.unwrap() as usize;
    let heads = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => 3,
    };
    let case = |batch, t, segment_len, with_h0, want_ht| TwoPhaseCase {
        batch,
        heads,
        t,
        segment_len,
        with_h0,
        want_ht,
    };
    let mut v = vec![
        case(1, 1, c, false, true),
        case(1, c / 2 + 3, c, true, true),
        case(2, 2 * c + 5, c, true, true),
    ];
    // Segments of several chunks, and T a multiple of L without H0 or H_T: runtime γ on
    // the shapes that emulate quickly.
    if spec.gammas == GammaSet::Runtime && spec.k * spec.v < 65536 {
        v.push(case(1, 4 * c + 5, 2 * c, true, true));
        v.push(case(1, 4 * c, 2 * c, false, false));
    }
    v
}

/// Emulated work of a pair's cases (K·V·tokens·heads; each token is walked twice at most).
fn cost(spec: &KernelSpec) -> usize {
    cases(spec)
        .iter()
        .map(|c| c.batch * c.heads * c.t * (spec.k * spec.v) as usize)
        .sum()
}

/// Run every case of the pair whose phase 2 is `spec`; assert the tolerances.
fn check_pair(spec: &KernelSpec, seed: u64) {
    let states = KernelSpec {
        op: KernelOp::ChunkStates,
        ..*spec
    };
    let (states_module, segmented_module) = (module(&states), module(spec));
    for (j, case) in cases(spec).into_iter().enumerate() {
        let what = format!("{} {case:?}", spec.slug());
        let (check, phase1) = check_case(
            (&states, &states_module),
            (spec, &segmented_module),
            case,
            seed + j as u64,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let segments = case.t.div_ceil(case.segment_len);
        assert_eq!(phase1.is_some(), segments > 1, "{what}");
        match spec.dtype {
            Dtype::F32 => assert!(
                check.o_error <= 1e-5,
                "{what}: o max rel {:e}",
                check.o_error
            ),
            Dtype::F16 | Dtype::Bf16 => {
                assert!(
                    check.o_error <= 5e-3,
                    "{what}: o rel RMSE {:e}",
                    check.o_error
                );
            }
        }
        assert!(
            check.state_error <= 1e-5,
            "{what}: H_T max rel {:e}",
            check.state_error
        );
        // Both phases' 16-bit kernels stage or zero-fill every shared byte they read.
        if spec.dtype != Dtype::F32 {
            assert_eq!(check.unwritten_shared_reads, 0, "{what}");
        }
    }
}

/// CI's sample on the first arch: for the n-th (K, V) the runtime-γ pair (3 heads) in dtype
/// n mod 3 where the catalog has it; then, for every named gamma set, its cheapest pair in
/// dtype m mod 3 (m the set's index); then one pair for any dtype not yet touched; then
/// runtime-γ pairs for every chunk length in a 16-bit dtype and in f32.
fn sample(specs: &[KernelSpec], full: bool) -> Vec<KernelSpec> {
    if full {
        return specs.to_vec();
    }
    let first: Vec<&KernelSpec> = specs.iter().filter(|s| s.arch == Arch::ALL[0]).collect();
    let mut dims: Vec<(u32, u32)> = Vec::new();
    for s in &first {
        if !dims.contains(&(s.k, s.v)) {
            dims.push((s.k, s.v));
        }
    }
    let cheapest = |pred: &dyn Fn(&KernelSpec) -> bool, dtype: Dtype| {
        first
            .iter()
            .filter(|s| pred(s))
            .min_by_key(|s| (s.dtype != dtype, cost(s)))
            .map(|s| **s)
    };
    let mut picked: Vec<KernelSpec> = dims
        .iter()
        .enumerate()
        .filter_map(|(n, &(k, v))| {
            cheapest(
                &|s| (s.k, s.v) == (k, v) && s.gammas == GammaSet::Runtime,
                Dtype::ALL[n % 3],
            )
        })
        .collect();
    for (m, set) in catalog::DEFAULT_GAMMA_SETS.into_iter().enumerate() {
        if !picked.iter().any(|p| p.gammas == set)
            && let Some(s) = cheapest(&|s| s.gammas == set, Dtype::ALL[m % 3])
        {
            picked.push(s);
        }
    }
    for dtype in Dtype::ALL {
        if !picked.iter().any(|p| p.dtype == dtype)
            && let Some(s) = cheapest(&|s| s.dtype == dtype, dtype)
        {
            picked.push(s);
        }
    }
    // Every chunk length, on tensor cores (16-bit) and FMA (f32).
    for chunk in first
        .iter()
        .map(|s| s.chunk)
        .collect::<std::collections::BTreeSet<_>>()
    {
        for dtype in [Dtype::Bf16, Dtype::F32] {
            if !picked
                .iter()
                .any(|p| p.chunk == chunk && (p.dtype == Dtype::F32) == (dtype == Dtype::F32))
                && let Some(s) = cheapest(
                    &|s| s.chunk == chunk && s.gammas == GammaSet::Runtime,
                    dtype,
                )
            {
                picked.push(s);
            }
        }
    }
    picked
}

#[test]
fn two_phase_variants_match_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::ChunkwiseSegmented)
        .collect();
    assert!(!specs.is_empty(), "the catalog has no two-phase kernels");
    let ran = sample(&specs, full);
    for (i, spec) in ran.iter().enumerate() {
        let start = std::time::Instant::now();
        check_pair(spec, 9000 + 10 * i as u64);
        println!("{spec}: {} units, {:.1?}", cost(spec), start.elapsed());
    }
    for s in &specs {
        assert!(
            ran.iter().any(|r| (r.k, r.v) == (s.k, s.v)),
            "no run for {s}"
        );
        assert!(
            ran.iter().any(|r| r.dtype == s.dtype),
            "no run in {}",
            s.dtype.name()
        );
        assert!(
            ran.iter().any(|r| r.gammas == s.gammas),
            "no run for {}",
            s.gammas.name()
        );
    }
    let work: usize = ran.iter().map(cost).sum();
    println!(
        "emulated {} of {} two-phase pairs ({work} K·V·token·head units)",
        ran.len(),
        specs.len()
    );
}

/// What the split costs in traffic, on B = 1, H = 2, T = 16·C with segments of 4·C (S = 4,
/// phase 2 runs 8 CTAs where the one-pass kernel runs 2): the one-pass minimum (q, k, v
/// read and o written once, H0 read and H_T written once) plus phase 1's re-read of k, v
/// over the first S − 1 segments and its S − 1 local states, plus phase 2's reads of every
/// earlier local state (Σ_s s = S(S−1)/2 per head) and of H0 by every segment — within
/// 1.05× of that model. The tensor-core paths have no shared bank conflicts.
#[test]
fn two_phase_traffic_stays_near_the_one_pass_minimum() {
    for dtype in [Dtype::Bf16, Dtype::F32] {
        let spec = KernelSpec::chunkwise(64, 64, 32, GammaSet::Runtime, dtype, Arch::Sm80)
            .with_op(KernelOp::ChunkwiseSegmented);
        let states = KernelSpec {
            op: KernelOp::ChunkStates,
            ..spec
        };
        let (b, h, c) = (1usize, 2usize, 32usize);
        let case = TwoPhaseCase {
            batch: b,
            heads: h,
            t: 16 * c,
            segment_len: 4 * c,
            with_h0: true,
            want_ht: true,
        };
        let (check, phase1) = check_case(
            (&states, &module(&states)),
            (&spec, &module(&spec)),
            case,
            77,
        )
        .unwrap();
        assert!(check.failure(dtype).is_none(), "{:?}", check.failure(dtype));
        let (p1, p2) = (phase1.unwrap(), check.report.unwrap());
        let (p1, p2) = (p1.emulated().unwrap(), p2.emulated().unwrap());
        let plan = two_phase_plan(&spec, 1, 2, 16 * 32, 4 * 32).unwrap();
        assert_eq!(plan.phase2.grid, [1, 2, 4]);
        assert_eq!(p2.grid, plan.phase2.grid);
        let es = dtype.size_bytes() as u64;
        let (t, k, v) = (case.t as u64, 64u64, 64u64);
        let hh = h as u64;
        let minimum = t * hh * (2 * k + 2 * v) * es + 2 * hh * k * v * 4;
        let segs = u64::from(plan.segments);
        let state = k * v * 4;
        let model = minimum
            + (segs - 1) * 4 * 32 * hh * (k + v) * es
            + (segs - 1) * hh * state
            + segs * (segs - 1) / 2 * hh * state
            + (segs - 1) * hh * state;
        let moved = p1.global_bytes_read
            + p1.global_bytes_written
            + p2.global_bytes_read
            + p2.global_bytes_written;
        println!(
            "{}: minimum {minimum} B, model {model} B, phase 1 {} B, phase 2 {} B ({:.3}x the \
             minimum); phase 1 {} warp instructions, phase 2 {}; predicted A100 {:.3e} s + \
             {:.3e} s",
            spec.slug(),
            p1.global_bytes_read + p1.global_bytes_written,
            p2.global_bytes_read + p2.global_bytes_written,
            moved as f64 / minimum as f64,
            p1.instructions.total(),
            p2.instructions.total(),
            p1.predicted_a100_seconds,
            p2.predicted_a100_seconds
        );
        assert!(
            moved >= minimum && moved as f64 <= 1.05 * model as f64,
            "moved {moved} vs model {model}"
        );
        if dtype != Dtype::F32 {
            assert_eq!(p1.shared_bank_conflicts + p2.shared_bank_conflicts, 0);
            assert!(p1.mma_flops > 0 && p2.mma_flops > 0);
        }
    }
}

/// The heuristic's segment length serves a plan, and the plan's phases agree with the
/// reference on it (one (b, h) pair, SM count 8 so that the split happens on a short T).
#[test]
fn preferred_segments_plan_and_run() {
    let spec = KernelSpec::chunkwise(64, 64, 32, GammaSet::Runtime, Dtype::F16, Arch::Sm90)
        .with_op(KernelOp::ChunkwiseSegmented);
    let t = 20 * 32 + 7;
    let len = prefer_two_phase(1, 1, t as u32, 32, 8).expect("one (b, h) pair on 8 SMs splits");
    let plan = two_phase_plan(&spec, 1, 1, t as u32, len).unwrap();
    assert!(plan.segments >= 2, "{plan:?}");
    let states = plan.states_spec;
    let case = TwoPhaseCase {
        batch: 1,
        heads: 1,
        t,
        segment_len: len as usize,
        with_h0: true,
        want_ht: true,
    };
    let (check, _) = check_case(
        (&states, &module(&states)),
        (&spec, &module(&spec)),
        case,
        5,
    )
    .unwrap();
    assert!(
        check.failure(Dtype::F16).is_none(),
        "{:?}",
        check.failure(Dtype::F16)
    );
}
