//! The packed variable-length chunkwise kernels (`chunkwise_varlen`), run as emitted PTX in
//! the emulator, match `reference::chunkwise_varlen` on the dtype-rounded inputs: f32
//! outputs and every final state ≤ 1e-5 relative, f16/bf16 outputs relative RMSE ≤ 5e-3.
//! Batches: three sequences of lengths C/2 + 3 (< C), 1 and 2C + 5 (not a multiple of C)
//! with H0; and 5, 0 (empty: H_T = H0 = 0) and C without H0.
//!
//! CI emulates every (K, V, C) with C ≤ 64 on the first arch with runtime γ (alternating the
//! tensor-core and FMA paths) plus one named set, and the long chunks (C ≥ 128, the blocked
//! FMA path) on the narrow heads (K·V ≤ 64·128: every C, both V slices) with one lighter
//! batch; `RETENTION_FULL_SWEEP=1` emulates every varlen variant on both batches.

use kernel_gen::emu::Module;
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx};
use retention_check::varlen;
use retention_core::Dtype;

/// Run one packed batch through the runtime's varlen check and hold it to the tolerances.
fn check_batch(spec: &KernelSpec, module: &Module, lengths: &[usize], with_h0: bool, seed: u64) {
    let what = format!("{} lengths {lengths:?} h0 {with_h0}", spec.slug());
    let check = varlen::check_batch(spec, module, lengths, with_h0, seed)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let tol = if spec.dtype == Dtype::F32 { 1e-5 } else { 5e-3 };
    assert!(check.o_error <= tol, "{what}: o error {:e}", check.o_error);
    assert!(
        check.state_error <= 1e-5,
        "{what}: H_T max rel diff {:e}",
        check.state_error
    );
    if spec.dtype != Dtype::F32 {
        assert_eq!(
            check.unwritten_shared_reads, 0,
            "{what}: reads of unwritten shared memory"
        );
    }
}

/// Chunks from this length on are sampled lightly in CI (see the module doc).
const LONG_CHUNK: u32 = 128;

/// Whether CI emulates long-chunk shape (K, V): the narrow heads only.
fn long_chunk_in_ci(s: &KernelSpec) -> bool {
    s.k * s.v <= 64 * 128
}

fn sample(specs: &[KernelSpec], full: bool) -> Vec<KernelSpec> {
    if full {
        return specs.to_vec();
    }
    let mut shapes = Vec::new();
    let mut picked = Vec::new();
    let skipped = |s: &KernelSpec| s.chunk >= Some(LONG_CHUNK) && !long_chunk_in_ci(s);
    for s in specs
        .iter()
        .filter(|s| s.arch == Arch::ALL[0] && !skipped(s))
    {
        let shape = (s.k, s.v, s.chunk);
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
        let n = shapes.iter().position(|x| *x == shape).unwrap();
        let dtype = [Dtype::Bf16, Dtype::F32, Dtype::F16][n % 3];
        let runtime_pick = s.gammas == GammaSet::Runtime && s.dtype == dtype;
        let named_pick = s.gammas == (GammaSet::Retnet { heads: 8 })
            && (s.k, s.v, s.chunk) == (64, 64, Some(32))
            && s.dtype == Dtype::F16;
        if runtime_pick || named_pick {
            picked.push(*s);
        }
    }
    // A shape served in one dtype only (e.g. f32 alone) still runs once.
    for s in specs
        .iter()
        .filter(|s| s.arch == Arch::ALL[0] && !skipped(s))
    {
        let shape = (s.k, s.v, s.chunk);
        if s.gammas == GammaSet::Runtime && !picked.iter().any(|p| (p.k, p.v, p.chunk) == shape) {
            picked.push(*s);
        }
    }
    picked
}

#[test]
fn varlen_variants_match_the_reference_in_the_emulator() {
    let full = std::env::var_os("RETENTION_FULL_SWEEP").is_some();
    let specs: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| s.op == KernelOp::ChunkwiseVarlen)
        .collect();
    assert!(
        !specs.is_empty(),
        "the catalog has no varlen chunkwise kernels"
    );
    let ran = sample(&specs, full);
    for (i, spec) in ran.iter().enumerate() {
        let module = Module::parse(&emit_ptx(spec).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", spec.slug()));
        let c = spec.chunk.unwrap() as usize;
        if full || spec.chunk < Some(LONG_CHUNK) {
            check_batch(
                spec,
                &module,
                &[c / 2 + 3, 1, 2 * c + 5],
                true,
                900 + i as u64,
            );
        }
        // Long chunks in CI: this batch alone still has an empty sequence, a partial chunk
        // and a sequence starting mid-buffer.
        let last = if full || spec.chunk < Some(LONG_CHUNK) {
            c
        } else {
            c + 3
        };
        check_batch(spec, &module, &[5, 0, last], false, 950 + i as u64);
    }
    for spec in &specs {
        let sampled = spec.chunk < Some(LONG_CHUNK) || long_chunk_in_ci(spec);
        assert!(
            !sampled
                || ran
                    .iter()
                    .any(|r| (r.k, r.v, r.chunk) == (spec.k, spec.v, spec.chunk)),
            "no run for {}",
            spec.slug()
        );
        assert!(ran.iter().any(|r| (r.k, r.v) == (spec.k, spec.v)));
        assert!(ran.iter().any(|r| r.chunk == spec.chunk));
        assert!(ran.iter().any(|r| r.dtype == spec.dtype));
    }
    println!(
        "emulated {} of {} varlen chunkwise variants",
        ran.len(),
        specs.len()
    );
}
