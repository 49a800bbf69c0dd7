//! The chunkwise forward kernels, run as emitted PTX in the emulator, match the f64
//! reference (`reference::chunkwise` on the dtype-rounded inputs): f32 outputs and final
//! states ≤ 1e-5 relative, f16/bf16 outputs relative RMSE ≤ 5e-3 (states ≤ 1e-5: they are f32
//! and computed from exactly representable inputs).
//!
//! Shapes cover T = 1, T < C, T not a multiple of C, a multi-chunk T, H0 given and absent.
//! CI emulates a sample touching every (K, V), every C, dtype and gamma set: every (K, V, C)
//! with C ≤ 64 (on one case where all cases cost more than [`HEAVY_SPEC`]), and the long
//! chunks (C ≥ 128: tensor cores, whole-chunk tiles or streamed k, v blocks, in 16-bit; the
//! blocked FMA path in f32) on one problem of a full and a partial chunk over 3 runtime-γ
//! heads (1 for the streamed path that refills its k, v slot), skipping shapes whose
//! problem costs more than [`LONG_CHUNK_BUDGET`];
//! `RETENTION_FULL_SWEEP=1` emulates every chunkwise variant of the catalog on every problem.

use kernel_gen::emu::{EmuReport, Module};
use kernel_gen::math::chunk_tiling::{self, uses_tensor_cores};
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx};
use retention_check::chunkwise::{self, ChunkCase};
use retention_core::Dtype;

/// Run `case` in the emulator through the one chunkwise check
/// (`retention_check::chunkwise::check_case`); assert it is within tolerance (and, for 16-bit
/// outputs, within 4× the error that rounding the reference alone gives); return the report.
fn check_case(spec: &KernelSpec, module: &Module, case: ChunkCase, seed: u64) -> EmuReport {
    let what = format!("{} {case:?}", spec.slug());
    let run =
        chunkwise::check_case(spec, module, case, seed).unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(why) = run.check.failure(spec.dtype) {
        panic!("{what}: {why}");
    }
    if spec.dtype != Dtype::F32 {
        let (err, floor) = (run.check.o_error, run.o_rounding_floor);
        assert!(
            err <= 4.0 * floor + 1e-7,
            "{what}: o rel RMSE {err:e} vs rounding {floor:e}"
        );
    }
    // The tensor-core paths stage or zero-fill every shared byte they read (the f32 FMA
    // path reads stale rows past a partial chunk by design, masked with selp).
    if uses_tensor_cores(spec) {
        assert_eq!(
            run.check.unwritten_shared_reads,
            0,
            "{}: reads of unwritten shared memory",
            spec.slug()
        );
    }
    run.check
        .report
        .and_then(|r| r.emulated().cloned())
        .expect("an emulated report")
}

/// Chunks from this length on are sampled lightly in CI (see the module doc).
const LONG_CHUNK: u32 = 128;
/// Most emulated work (K·V·token·head units) CI spends on one long-chunk spec: every C and
/// K up to 256 still run, (K, V, C) = (256, 256, 256), (256, 512, 128) and (256, 512, 256)
/// only in the full sweep.
const LONG_CHUNK_BUDGET: usize = 30_000_000;
/// Above this much work on the full case list, CI runs a spec on one case (K = 256 with
/// V = 512 and C = 64).
const HEAVY_SPEC: usize = 100_000_000;

/// Whether CI runs `spec` on one case (a full and a partial chunk with H0) instead of all.
fn light(spec: &KernelSpec) -> bool {
    spec.chunk >= Some(LONG_CHUNK) || cost(spec, true) > HEAVY_SPEC
}

/// The cases every emulated spec runs: T = 1; T < C with H0; T not a multiple of C with H0
/// over two rows; for runtime γ also a T that is a multiple of C without H0. In CI a long
/// chunk runs one case: a full and a partial chunk with H0.
fn cases(spec: &KernelSpec, full: bool) -> Vec<ChunkCase> {
    let c = spec.chunk.unwrap() as usize;
    let heads = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => 3,
    };
    let case = |batch, t, with_h0, want_ht| ChunkCase {
        batch,
        heads,
        t,
        with_h0,
        want_ht,
    };
    if !full && light(spec) {
        // The streamed tensor-core path that refills one k, v slot (K = 256, C = 256) runs
        // in CI on one runtime-γ head, which keeps it within the long-chunk budget.
        let refills = chunk_tiling::streamed_plan(spec).is_some_and(|p| p.slots == 1);
        let heads = if refills && spec.gammas == GammaSet::Runtime {
            1
        } else {
            heads
        };
        return vec![ChunkCase {
            heads,
            ..case(1, c + 5, true, true)
        }];
    }
    let mut v = vec![
        case(1, 1, false, true),
        case(1, c / 2 + 3, true, true),
        case(2, 2 * c + 5, true, true),
    ];
    if spec.gammas == GammaSet::Runtime {
        v.push(case(1, 2 * c, false, false));
    }
    v
}

/// Emulated work of a spec's cases, in units of K·V·tokens·heads (what its loops cost).
fn cost(spec: &KernelSpec, full: bool) -> usize {
    cases(spec, full)
        .iter()
        .map(|c| c.batch * c.heads * c.t.max(1) * (spec.k * spec.v) as usize)
        .sum()
}

/// The specs CI emulates: on the first arch, runtime γ for every (K, V, C) in a 16-bit dtype
/// (tensor cores) and for every other shape in f32 (FMA), plus two named sets; the full
/// sweep takes every spec.
fn sample(specs: &[KernelSpec], full: bool) -> Vec<KernelSpec> {
    if full {
        return specs.to_vec();
    }
    let mut shapes: Vec<(u32, u32, Option<u32>)> = Vec::new();
    let mut picked = Vec::new();
    let long = |s: &KernelSpec| s.chunk >= Some(LONG_CHUNK);
    for s in specs.iter().filter(|s| s.arch == Arch::ALL[0]) {
        let shape = (s.k, s.v, s.chunk);
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
        let n = shapes.iter().position(|x| *x == shape).unwrap();
        // retnet(10) on a long chunk (tensor cores, one case).
        if s.gammas == (GammaSet::Retnet { heads: 10 })
            && (s.k, s.v, s.chunk, s.dtype) == (64, 64, Some(LONG_CHUNK), Dtype::Bf16)
        {
            picked.push(*s);
        }
        if long(s) {
            // Per affordable shape the runtime-γ spec in a 16-bit dtype (f16 and bf16
            // alternating: tensor cores where they serve the shape, else the blocked FMA
            // path), and in f32 too (the blocked FMA path) for the narrower heads whose
            // 16-bit spec is on tensor cores.
            let sixteen = [Dtype::F16, Dtype::Bf16][n % 2];
            let fma_too = s.dtype == Dtype::F32 && s.k * s.v <= 128 * 128 && {
                let tc = KernelSpec {
                    dtype: sixteen,
                    ..*s
                };
                uses_tensor_cores(&tc)
            };
            if s.gammas == GammaSet::Runtime
                && (s.dtype == sixteen || fma_too)
                && cost(s, false) <= LONG_CHUNK_BUDGET
            {
                picked.push(*s);
            }
            continue;
        }
        // Every shape on the tensor-core path (f16 and bf16 alternating), every other shape
        // on the FMA path too.
        let runtime_pick = s.gammas == GammaSet::Runtime
            && (s.dtype == [Dtype::F16, Dtype::Bf16][n % 2]
                || (s.dtype == Dtype::F32 && n % 2 == 0));
        // The named sets on K = V = 64, C = 32: retnet(8) bf16, retnet(16) f32, and the
        // slowest decays, retnet(32), on tensor cores (f16).
        let named_pick = (s.k, s.v) == (64, 64)
            && ((s.gammas == GammaSet::Retnet { heads: 8 } && s.dtype == Dtype::Bf16)
                || (s.gammas == GammaSet::Retnet { heads: 16 } && s.dtype == Dtype::F32)
                || (s.gammas == GammaSet::Retnet { heads: 32 } && s.dtype == Dtype::F16))
            && s.chunk == Some(32);
        if runtime_pick || named_pick {
            picked.push(*s);
        }
    }
    // A shape served in one dtype only (e.g. f32 alone) still runs once.
    for s in specs.iter().filter(|s| s.arch == Arch::ALL[0] && !long(s)) {
        let shape = (s.k, s.v, s.chunk);
        if s.gammas == GammaSet::Runtime && !picked.iter().any(|p| (p.k, p.v, p.chunk) == shape) {
            picked.push(*s);
        }
    }
    picked
}

#[test]
fn chunkwise_variants_match_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::Chunkwise)
        .collect();
    assert!(!specs.is_empty(), "the catalog has no chunkwise kernels");
    let ran = sample(&specs, full);
    for (i, spec) in ran.iter().enumerate() {
        let module = Module::parse(&emit_ptx(spec).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        for (j, case) in cases(spec, full).into_iter().enumerate() {
            check_case(spec, &module, case, 7000 + 10 * i as u64 + j as u64);
        }
    }
    for spec in &specs {
        let affordable = spec.arch == Arch::ALL[0]
            && (spec.chunk < Some(LONG_CHUNK) || cost(spec, false) <= LONG_CHUNK_BUDGET);
        assert!(
            !affordable
                || ran
                    .iter()
                    .any(|r| (r.k, r.v, r.chunk) == (spec.k, spec.v, spec.chunk)),
            "no run for {}",
            spec.slug()
        );
        assert!(ran.iter().any(|r| (r.k, r.v) == (spec.k, spec.v)));
        assert!(ran.iter().any(|r| r.chunk == spec.chunk));
        assert!(ran.iter().any(|r| r.dtype == spec.dtype));
        assert!(ran.iter().any(|r| r.gammas == spec.gammas));
    }
    let work: usize = ran.iter().map(|s| cost(s, full)).sum();
    println!(
        "emulated {} of {} chunkwise variants ({work} K·V·token·head units)",
        ran.len(),
        specs.len()
    );
}

/// The traffic probe of ARCHITECTURE §5: B=1, H=2, T=512 with H0 and H_T, checked against the
/// reference; returns the emulator's counters.
fn traffic_probe(spec: &KernelSpec, seed: u64) -> EmuReport {
    let module = Module::parse(&emit_ptx(spec).unwrap()).unwrap();
    let case = ChunkCase {
        batch: 1,
        heads: 2,
        t: 512,
        with_h0: true,
        want_ht: true,
    };
    check_case(spec, &module, case, seed)
}

/// ARCHITECTURE §5 targets at B=1, H=2, T=512, K=V=64, C=64 (every dtype) and C=128 (tensor
/// cores, 16-row blocks whose scores are built 64 columns at a time): global traffic within
/// 1.15× the minimum (q, k, v read once, o written once, H0 read once, H_T written once), and
/// no shared bank conflicts on the tensor-core path (f16, bf16).
#[test]
fn chunkwise_moves_each_input_once() {
    let long_tc = [Dtype::Bf16, Dtype::F16].map(|d| (128, d));
    for (c, dtype) in Dtype::ALL.map(|d| (64, d)).into_iter().chain(long_tc) {
        let spec = KernelSpec::chunkwise(64, 64, c, GammaSet::Runtime, dtype, Arch::Sm80);
        assert!(c == 64 || uses_tensor_cores(&spec), "{}", spec.slug());
        let report = traffic_probe(&spec, 99);
        let es = spec.dtype.size_bytes() as u64;
        let (b, h, t, k, v) = (1u64, 2u64, 512u64, 64u64, 64u64);
        let minimum = b * t * h * (2 * k + v) * es + b * t * h * v * es + 2 * b * h * k * v * 4;
        let moved = report.global_bytes_read + report.global_bytes_written;
        let sectors = report.global_sectors * 32;
        println!(
            "{}: minimum {minimum} B, moved {moved} B ({:.4}x), sectors {sectors} B ({:.4}x), \
             {} shared bank conflicts over {} requests, {} warp instructions, {} fp32 flops, \
             predicted A100 {:.3e} s",
            spec.slug(),
            moved as f64 / minimum as f64,
            sectors as f64 / minimum as f64,
            report.shared_bank_conflicts,
            report.shared_requests,
            report.instructions.total(),
            report.fp32_flops,
            report.predicted_a100_seconds
        );
        assert!(
            moved as f64 <= 1.15 * minimum as f64,
            "moved {moved} vs {minimum}"
        );
        assert!(
            sectors as f64 <= 1.15 * minimum as f64,
            "sectors {sectors} vs {minimum}"
        );
        if uses_tensor_cores(&spec) {
            assert_eq!(report.shared_bank_conflicts, 0, "{}", spec.slug());
            assert!(report.mma_flops > 0, "{}: no mma ran", spec.slug());
        }
    }
}

/// The streamed tensor-core path at B=1, H=2, T=512 (two full chunks of 256), V=64, H0 and
/// H_T: with k and v blocks resident for the chunk (K = 128) every input moves once, within
/// 1.15× the minimum; with one refilled slot (K = 256) pass p re-reads blocks 0..p, so k and
/// v move (n+1)/2 = 2.5 times for n = C/64 = 4 blocks, and the total stays within 1.15× of
/// that plan. No shared bank conflicts either way.
#[test]
fn streamed_chunks_move_inputs_as_planned() {
    for (k, dtype, reads) in [(128u64, Dtype::Bf16, 1.0), (256, Dtype::F16, 2.5)] {
        let spec = KernelSpec::chunkwise(k as u32, 64, 256, GammaSet::Runtime, dtype, Arch::Sm80);
        let plan = chunk_tiling::streamed_plan(&spec).expect("a streamed spec");
        assert_eq!(plan.slots == 1, reads > 1.0, "{plan:?}");
        let report = traffic_probe(&spec, 77);
        let (h, t, v, es) = (2f64, 512f64, 64f64, 2f64);
        let kf = k as f64;
        let minimum = h * t * (2.0 * kf + 2.0 * v) * es + 2.0 * h * kf * v * 4.0;
        let planned = minimum + (reads - 1.0) * h * t * (kf + v) * es;
        let moved = (report.global_bytes_read + report.global_bytes_written) as f64;
        println!(
            "{}: minimum {minimum} B, planned {planned} B, moved {moved} B ({:.4}x plan), \
             {} bank conflicts, predicted A100 {:.3e} s",
            spec.slug(),
            moved / planned,
            report.shared_bank_conflicts,
            report.predicted_a100_seconds
        );
        assert!(moved >= minimum, "{}: {moved} < {minimum}", spec.slug());
        assert!(
            moved <= 1.15 * planned,
            "{}: {moved} vs {planned}",
            spec.slug()
        );
        assert_eq!(report.shared_bank_conflicts, 0, "{}", spec.slug());
        assert!(report.mma_flops > 0, "{}", spec.slug());
    }
}

/// Emulator counters of one launch at `t` tokens (B = H = 1, H0 and H_T).
fn counters_at(spec: &KernelSpec, module: &Module, t: usize) -> EmuReport {
    let case = ChunkCase {
        batch: 1,
        heads: 1,
        t,
        with_h0: true,
        want_ht: true,
    };
    check_case(spec, module, case, 500 + t as u64)
}

/// The *predicted* A100 throughput of the tensor-core chunkwise kernel on fla's benchmark
/// shape (B=8, H=32, T=16384, K=V=128), scaled from counters measured here. The test
/// asserts what the scaling rests on — every full chunk costs exactly the same warp
/// instructions, `mma`s and global bytes (counters are affine in T), and the per-warp `mma`
/// split below adds up to the measured count — and prints the prediction (nothing is timed).
///
/// Model: one CTA per (b, h) holds an SM alone (≈250 registers × 256 threads), so the 256
/// CTAs run in ⌈256 / 108⌉ = 3 waves. Warp w runs on sub-partition w mod 4, whose tensor
/// core does an m16n8k16 in 8 cycles (312 TFLOP/s over 108 SMs × 4 at 1.41 GHz); a chunk
/// costs the busiest sub-partition's `mma` cycles or a quarter of the warp instructions,
/// whichever is more, plus one exposed global round trip (800 cycles: the chunk's
/// `cp.async` is waited on without prefetching). Memory (2.04 TB/s) is a floor.
#[test]
fn chunkwise_counters_scale_linearly_and_predict_the_fla_shape() {
    let spec = KernelSpec::chunkwise(128, 128, 32, GammaSet::Runtime, Dtype::Bf16, Arch::Sm80);
    assert!(uses_tensor_cores(&spec));
    let module = Module::parse(&emit_ptx(&spec).unwrap()).unwrap();
    let c = u64::from(spec.chunk.unwrap());
    let runs: Vec<EmuReport> = [256, 512, 768]
        .iter()
        .map(|&t| counters_at(&spec, &module, t))
        .collect();
    let instr = |r: &EmuReport| r.instructions.total();
    let mma = |r: &EmuReport| r.instructions.mma;
    let bytes = |r: &EmuReport| r.global_bytes_read + r.global_bytes_written;
    for f in [instr, mma, bytes] {
        assert_eq!(
            f(&runs[2]) - f(&runs[1]),
            f(&runs[1]) - f(&runs[0]),
            "a chunk's cost depends on its position"
        );
    }
    let chunks = 256 / c;
    let per_chunk = |f: fn(&EmuReport) -> u64| (f(&runs[1]) - f(&runs[0])) as f64 / chunks as f64;
    let fixed = |f: fn(&EmuReport) -> u64| f(&runs[0]) as f64 - per_chunk(f) * chunks as f64;
    // mma per warp and chunk: rows warps (w < C/16) do S, Q R~ and S~ V; state warps
    // (w < K/16) do the head and tail halves of (K^T . zeta) V.
    let (kd, vd, cd) = (u64::from(spec.k), u64::from(spec.v), c);
    let rows = kd / 16 * cd / 8 + kd / 16 * vd / 8 + cd / 16 * vd / 8;
    let state = 2 * cd / 16 * vd / 8;
    let warps = cd.max(kd) / 16;
    let per_warp: Vec<u64> = (0..warps)
        .map(|w| u64::from(w < cd / 16) * rows + u64::from(w < kd / 16) * state)
        .collect();
    assert_eq!(per_warp.iter().sum::<u64>() as f64, per_chunk(mma));
    let busiest = (0..4)
        .map(|s| per_warp.iter().skip(s).step_by(4).sum::<u64>())
        .max()
        .unwrap();
    let (b, h, t, k, v) = (8.0, 32.0, 16384.0, 128.0, 128.0);
    let n = t / c as f64;
    let cycles_per_chunk = (per_chunk(instr) / 4.0).max(busiest as f64 * 8.0) + 800.0;
    let cta_cycles = fixed(instr) / 4.0 + n * cycles_per_chunk;
    let waves = (b * h / 108.0_f64).ceil();
    let compute_s = waves * cta_cycles / 1.41e9;
    let memory_s = b * h * (fixed(bytes) + n * per_chunk(bytes)) / 2.04e12;
    let predicted_s = compute_s.max(memory_s);
    // Useful FLOPs as ARCHITECTURE §5 counts them, at chunk 64 as in fla's benchmark.
    let flops = b * h * t * (2.0 * 64.0 * (k + v) + 4.0 * k * v);
    println!(
        "{} per chunk of {c}: {:.0} warp instructions, {:.0} mma (busiest sub-partition \
         {busiest}), {:.0} global bytes; {cycles_per_chunk:.0} cycles/chunk, {waves} waves \
         -> predicted A100 {:.2} ms (memory floor {:.2} ms) = {:.1} TFLOP/s predicted \
         (fla, measured on a real A100: 38-43)",
        spec.slug(),
        per_chunk(instr),
        per_chunk(mma),
        per_chunk(bytes),
        predicted_s * 1e3,
        memory_s * 1e3,
        flops / predicted_s / 1e12
    );
    assert!(predicted_s.is_finite() && predicted_s >= memory_s);
}
