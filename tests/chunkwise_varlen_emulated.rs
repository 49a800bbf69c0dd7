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

mod common;

use common::{emu_dtype, gammas_for, input_buffer, log2_gamma_buffer, output_values};
use kernel_gen::emu::{Buffer, Launch, Module, Param};
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx, launch_geometry};
use retention_core::{CuSeqlens, Dtype, HostTensor, SplitMix64};
use retention_kernels::reference::{self, RetentionParams};

const SCALE: f64 = 0.31;

fn tensor(shape: Vec<usize>, data: &[f64]) -> HostTensor<f64> {
    HostTensor::new(shape, data.to_vec()).unwrap()
}

/// Run one packed batch of sequences with `lengths` and compare with the reference.
fn check_batch(spec: &KernelSpec, module: &Module, lengths: &[usize], with_h0: bool, seed: u64) {
    let h = match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => 3,
    };
    let (k, v) = (spec.k as usize, spec.v as usize);
    let n = lengths.len();
    let mut bounds = vec![0usize];
    for l in lengths {
        bounds.push(bounds.last().unwrap() + l);
    }
    let total = *bounds.last().unwrap();
    let cu = CuSeqlens::new(bounds.clone(), total).unwrap();
    let gammas = gammas_for(spec.gammas, h);
    let params = RetentionParams::new(gammas.clone(), Some(SCALE));
    let mut rng = SplitMix64::new(seed);
    let round = |xs: Vec<f64>| {
        xs.into_iter()
            .map(|x| spec.dtype.round(x))
            .collect::<Vec<_>>()
    };
    let q = round(rng.vec(total * h * k));
    let kk = round(rng.vec(total * h * k));
    let vv = round(rng.vec(total * h * v));
    let h0: Vec<f64> = rng
        .vec(n * h * k * v)
        .into_iter()
        .map(|x| f64::from(x as f32))
        .collect();
    let h0_tensor = tensor(vec![n, h, k, v], &h0);
    let (want_o, want_ht) = reference::chunkwise_varlen(
        &tensor(vec![1, total, h, k], &q),
        &tensor(vec![1, total, h, k], &kk),
        &tensor(vec![1, total, h, v], &vv),
        &cu,
        &params,
        spec.chunk.unwrap() as usize,
        with_h0.then_some(&h0_tensor),
    )
    .unwrap();

    let geometry = launch_geometry(spec, n as u32, h as u32).unwrap();
    let mut launch = Launch::new(spec.entry(), geometry.grid, geometry.block)
        .dynamic_shared(geometry.dynamic_smem_bytes)
        .arg(Param::Buffer(input_buffer(spec.dtype, &q)))
        .arg(Param::Buffer(input_buffer(spec.dtype, &kk)))
        .arg(Param::Buffer(input_buffer(spec.dtype, &vv)))
        .arg(Param::Buffer(
            Buffer::zeros(emu_dtype(spec.dtype), total * h * v).output(),
        ))
        .arg(if with_h0 {
            Param::Buffer(Buffer::from_f32(
                &h0.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            ))
        } else {
            Param::U64(0)
        })
        .arg(Param::Buffer(
            Buffer::zeros(emu_dtype(Dtype::F32), n * h * k * v).output(),
        ))
        .arg(Param::Buffer(Buffer::from_u32(
            &bounds.iter().map(|&b| b as u32).collect::<Vec<_>>(),
        )))
        .arg(Param::F32(SCALE as f32));
    if spec.gammas == GammaSet::Runtime {
        launch = launch
            .arg(Param::U32(h as u32))
            .arg(Param::Buffer(log2_gamma_buffer(&gammas)));
    }
    let what = format!("{} lengths {lengths:?} h0 {with_h0}", spec.slug());
    module
        .launch(&mut launch)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = output_values(spec.dtype, launch.buffer(3).unwrap());
    match spec.dtype {
        Dtype::F32 => {
            let err = reference::max_rel_diff(&got, want_o.data());
            assert!(err <= 1e-5, "{what}: o max rel diff {err:e}");
        }
        Dtype::F16 | Dtype::Bf16 => {
            let err = reference::rel_rmse(&got, want_o.data());
            assert!(err <= 5e-3, "{what}: o rel RMSE {err:e}");
        }
    }
    let got_ht: Vec<f64> = launch
        .buffer(5)
        .unwrap()
        .to_f32()
        .into_iter()
        .map(f64::from)
        .collect();
    let err = reference::max_rel_diff(&got_ht, want_ht.data());
    assert!(err <= 1e-5, "{what}: H_T max rel diff {err:e}");
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
