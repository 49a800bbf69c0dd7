//! Head dims outside the catalog (K ≤ 256, V ≤ 512, any positive size) on the chunk families
//! and the parallel forward, run as emitted PTX in the emulator through the runtime's catalog
//! checks, match the f64 reference with the catalog's tolerances (f32 o and H_T ≤ 1e-5
//! relative; f16/bf16 o relative RMSE ≤ 5e-3, H_T ≤ 1e-5, and no read of never-written shared
//! memory). The emulator also fails a launch on any out-of-bounds or misaligned access or a
//! shared-memory race, so the masked tails (padded columns loaded as zeros, never stored)
//! are checked byte by byte.
//!
//! A fixed sample, not a sweep: K, V ∈ {8, 16, 24, 60, 100, 200} plus one odd pair (scalar
//! tail accesses), every dtype, C ∈ {32, 64} and one long chunk per chunkwise path (the
//! blocked FMA path), runtime γ and a named γ set, T not a multiple of C, with and without H0,
//! dense, varlen and two-phase. Dims past K = 256 or V = 512 (or 0) are refused with a typed
//! error naming the axis.

use kernel_gen::emu::Module;
use kernel_gen::plan::KernelPath;
use kernel_gen::{Arch, GammaSet, GenError, KernelOp, KernelSpec, LaunchSize, emit_ptx, plan};
use retention_check::io::unwritten_shared_reads;
use retention_check::two_phase::{TwoPhaseCase, check_case};
use retention_check::{chunkwise, parallel, varlen};
use retention_core::Dtype;

const RUNTIME: GammaSet = GammaSet::Runtime;
const NAMED: GammaSet = GammaSet::Retnet { heads: 4 };

fn module(spec: &KernelSpec) -> Module {
    let ptx = emit_ptx(spec).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
    Module::parse(&ptx).unwrap_or_else(|e| panic!("{}: {e}", spec.slug()))
}

fn path(spec: &KernelSpec) -> KernelPath {
    let size = LaunchSize {
        rows: 1,
        heads: 4,
        tokens: 100,
    };
    plan(spec, size)
        .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()))
        .path
}

fn verdict(spec: &KernelSpec, what: &str, got: &retention_check::EmuCheck) {
    if let Some(why) = got.failure(spec.dtype) {
        panic!("{} {what}: {why}", spec.slug());
    }
    assert!(got.o_error.is_finite() && got.state_error.is_finite());
    assert_eq!(
        got.unwritten_shared_reads,
        0,
        "{} {what}: unwritten shared reads",
        spec.slug()
    );
    println!(
        "{} {what}: o error {:.2e}, state error {:.2e}",
        spec.slug(),
        got.o_error,
        got.state_error
    );
}

/// Which path a sampled spec must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Fma,
    Blocked,
    Tc,
    Streamed,
}

fn kind(path: KernelPath) -> Want {
    match path {
        KernelPath::Fma => Want::Fma,
        KernelPath::FmaBlocked { .. } => Want::Blocked,
        KernelPath::TensorCores => Want::Tc,
        KernelPath::TensorCoresStreamed { .. } => Want::Streamed,
        other @ KernelPath::Vector => panic!("unexpected chunk path {other:?}"),
    }
}

/// (K, V, C, dtype, gammas, path) of the sampled chunkwise specs: every path with C in
/// {32, 64} and one long chunk each (blocked FMA, whole-chunk and streamed tensor cores);
/// odd 16-bit dims take the FMA path.
const CHUNKWISE: [(u32, u32, u32, Dtype, GammaSet, Want); 12] = [
    (16, 24, 32, Dtype::F32, RUNTIME, Want::Fma),
    (60, 100, 64, Dtype::F32, NAMED, Want::Fma),
    (200, 8, 32, Dtype::F32, RUNTIME, Want::Fma),
    (100, 200, 128, Dtype::F32, RUNTIME, Want::Blocked),
    (24, 60, 64, Dtype::Bf16, RUNTIME, Want::Tc),
    (100, 16, 32, Dtype::F16, NAMED, Want::Tc),
    (200, 100, 64, Dtype::Bf16, RUNTIME, Want::Tc),
    (8, 200, 32, Dtype::F16, RUNTIME, Want::Tc),
    (16, 300, 32, Dtype::Bf16, RUNTIME, Want::Tc),
    (8, 60, 256, Dtype::Bf16, RUNTIME, Want::Tc),
    (100, 24, 256, Dtype::F16, RUNTIME, Want::Streamed),
    (13, 7, 32, Dtype::F16, RUNTIME, Want::Fma),
];

#[test]
fn chunkwise_serves_any_head_dims() {
    for (i, &(k, v, c, dtype, gammas, want)) in CHUNKWISE.iter().enumerate() {
        let spec = KernelSpec::chunkwise(k, v, c, gammas, dtype, Arch::Sm80);
        assert_eq!(kind(path(&spec)), want, "{}", spec.slug());
        // Value slices wholly past V are not launched (V = 300: three of 128 columns).
        let p = plan(
            &spec,
            LaunchSize {
                rows: 1,
                heads: 4,
                tokens: 100,
            },
        )
        .unwrap();
        assert_eq!(
            p.geometry.grid[2],
            v.div_ceil(p.value_slice),
            "{}",
            spec.slug()
        );
        let m = module(&spec);
        let c = c as usize;
        // Two rows over a full and a partial chunk with H0; one row of T < C without.
        let long = c > 64;
        let sizes: &[(usize, usize, usize)] = if long {
            &[(1, 2, 0)]
        } else {
            &[(2, 3, 0), (1, 3, 1)]
        };
        for (j, &(b, h, which)) in sizes.iter().enumerate() {
            let t = if which == 0 { c + 5 } else { c / 2 + 3 };
            let got = chunkwise::check_on(&spec, &m, (b, h, t), 700 + 10 * i as u64 + j as u64)
                .unwrap_or_else(|e| panic!("{} T={t}: {e}", spec.slug()));
            verdict(&spec, &format!("B={b} T={t}"), &got);
        }
    }
}

#[test]
fn chunkwise_varlen_serves_any_head_dims() {
    for (i, &(k, v, c, dtype)) in [(60, 24, 32, Dtype::F32), (100, 60, 64, Dtype::Bf16)]
        .iter()
        .enumerate()
    {
        let spec = KernelSpec::chunkwise(k, v, c, RUNTIME, dtype, Arch::Sm80)
            .with_op(KernelOp::ChunkwiseVarlen);
        let m = module(&spec);
        let c = c as usize;
        let got = varlen::check_batch(&spec, &m, &[c / 2 + 3, 0, c + 5], true, 800 + i as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        verdict(&spec, "varlen", &got);
    }
}

#[test]
fn parallel_serves_any_head_dims() {
    let specs = [
        (8, 24, 32, Dtype::F32, RUNTIME, Want::Fma),
        (200, 200, 32, Dtype::F32, NAMED, Want::Fma),
        (13, 7, 32, Dtype::F32, RUNTIME, Want::Fma),
        (60, 100, 64, Dtype::Bf16, RUNTIME, Want::Tc),
        (100, 16, 32, Dtype::F16, NAMED, Want::Tc),
        (24, 200, 32, Dtype::Bf16, RUNTIME, Want::Tc),
        (13, 7, 32, Dtype::F16, RUNTIME, Want::Fma),
    ];
    for (i, &(k, v, b, dtype, gammas, want)) in specs.iter().enumerate() {
        let spec = KernelSpec::parallel(k, v, b, gammas, dtype, Arch::Sm80);
        assert_eq!(kind(path(&spec)), want, "{}", spec.slug());
        let m = module(&spec);
        let b = b as usize;
        for (j, size) in [(2, 3, 2 * b + 5), (1, 3, b / 2 + 3)]
            .into_iter()
            .enumerate()
        {
            let got = parallel::check_on(&spec, &m, size, 900 + 10 * i as u64 + j as u64)
                .unwrap_or_else(|e| panic!("{} {size:?}: {e}", spec.slug()));
            verdict(&spec, &format!("{size:?}"), &got);
        }
    }
}

#[test]
fn head_dims_outside_the_served_range_are_refused_by_name() {
    let refused = |spec: KernelSpec, field: &str| match spec.validate() {
        Err(GenError::UnsupportedSpec { what: f, .. }) => {
            assert_eq!(f, field, "{}", spec.slug());
        }
        other => panic!("{}: expected UnsupportedSpec, got {other:?}", spec.slug()),
    };
    let a = Arch::Sm80;
    for op_spec in [
        KernelSpec::chunkwise(0, 64, 64, RUNTIME, Dtype::F32, a),
        KernelSpec::chunkwise(257, 64, 64, RUNTIME, Dtype::Bf16, a),
        KernelSpec::parallel(0, 64, 64, RUNTIME, Dtype::F32, a),
        KernelSpec::parallel(300, 64, 64, RUNTIME, Dtype::F16, a),
    ] {
        refused(op_spec, "head dim K");
    }
    for op_spec in [
        KernelSpec::chunkwise(64, 513, 64, RUNTIME, Dtype::F32, a),
        KernelSpec::chunkwise(64, 0, 64, RUNTIME, Dtype::F32, a).with_op(KernelOp::ChunkwiseVarlen),
        KernelSpec::parallel(64, 1024, 32, RUNTIME, Dtype::Bf16, a),
    ] {
        refused(op_spec, "head dim V");
    }
    for op_spec in [
        KernelSpec::chunkwise(257, 100, 64, RUNTIME, Dtype::F32, a).with_op(KernelOp::ChunkStates),
        KernelSpec::chunkwise(0, 24, 32, RUNTIME, Dtype::Bf16, a)
            .with_op(KernelOp::ChunkwiseSegmented),
    ] {
        refused(op_spec, "head dim K");
    }
}

/// The two-phase forward (phase 1 `chunk_states` into a workspace of padded states, phase 2
/// `chunkwise_segmented` folding them) at head dims outside the catalog: FMA (f32, and odd
/// 16-bit dims) and tensor cores, several segments ending in a partial chunk, with H0.
#[test]
fn two_phase_serves_any_head_dims() {
    let pairs = [
        (60, 24, 32, Dtype::F32, RUNTIME, Want::Fma),
        (100, 200, 64, Dtype::Bf16, RUNTIME, Want::Tc),
        (24, 60, 32, Dtype::F16, NAMED, Want::Tc),
        (13, 7, 32, Dtype::Bf16, RUNTIME, Want::Fma),
    ];
    for (i, &(k, v, c, dtype, gammas, want)) in pairs.iter().enumerate() {
        let states = KernelSpec::chunkwise(k, v, c, gammas, dtype, Arch::Sm80)
            .with_op(KernelOp::ChunkStates);
        let segmented = KernelSpec::chunkwise(k, v, c, gammas, dtype, Arch::Sm80)
            .with_op(KernelOp::ChunkwiseSegmented);
        assert_eq!(states.op, KernelOp::ChunkStates);
        assert_eq!(kind(path(&segmented)), want, "{}", segmented.slug());
        let (m1, m2) = (module(&states), module(&segmented));
        let c = c as usize;
        let case = TwoPhaseCase {
            batch: 2,
            heads: 2,
            t: 4 * c + 5,
            segment_len: 2 * c,
            with_h0: true,
            want_ht: true,
        };
        let (got, phase1) = check_case((&states, &m1), (&segmented, &m2), case, 600 + i as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", segmented.slug()));
        let phase1 = phase1.unwrap_or_else(|| panic!("{}: phase 1 never ran", states.slug()));
        assert_eq!(
            unwritten_shared_reads(&phase1),
            0,
            "{}: phase 1 read unwritten shared memory",
            states.slug()
        );
        verdict(&segmented, "two-phase", &got);
    }
}

/// A K padded to 256 with C = 128 streams its k, v blocks on sm_90 too (the whole-chunk
/// kernel has no registers left for the masked tails there).
#[test]
fn a_padded_k_256_with_c_128_streams_on_sm_90() {
    let spec = KernelSpec::chunkwise(200, 100, 128, RUNTIME, Dtype::Bf16, Arch::Sm90);
    assert_eq!(kind(path(&spec)), Want::Streamed, "{}", spec.slug());
    let catalog_twin = KernelSpec::chunkwise(256, 128, 128, RUNTIME, Dtype::Bf16, Arch::Sm90);
    assert_eq!(kind(path(&catalog_twin)), Want::Tc);
    let m = module(&spec);
    let got = chunkwise::check_on(&spec, &m, (1, 2, 133), 990)
        .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
    verdict(&spec, "B=1 T=133", &got);
}

/// Where the FMA path would block a chunk (K = 200 or 256 with an odd 16-bit V), the two-phase
/// forward is refused by name — the blocked generator ignores segments, so every phase-2 CTA
/// would redo the whole sequence — and the runtime serves the problem one-pass.
#[test]
fn two_phase_refuses_blocked_fma_chunks() {
    for (k, v, dtype) in [
        (200, 7, Dtype::F16),
        (256, 7, Dtype::Bf16),
        (256, 256, Dtype::F32),
    ] {
        let one_pass = KernelSpec::chunkwise(k, v, 64, RUNTIME, dtype, Arch::Sm80);
        assert!(
            matches!(path(&one_pass), KernelPath::FmaBlocked { .. }),
            "{}",
            one_pass.slug()
        );
        for spec in [
            KernelSpec::chunkwise(k, v, 64, RUNTIME, dtype, Arch::Sm80)
                .with_op(KernelOp::ChunkStates),
            KernelSpec::chunkwise(k, v, 64, RUNTIME, dtype, Arch::Sm80)
                .with_op(KernelOp::ChunkwiseSegmented),
        ] {
            match spec.validate() {
                Err(GenError::UnsupportedSpec { what, .. }) => assert_eq!(what, "head dims"),
                other => panic!("{}: {other:?}", spec.slug()),
            }
        }
    }
}
