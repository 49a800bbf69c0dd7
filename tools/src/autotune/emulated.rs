//! `autotune --device emulated`: choose among the catalog's chunkwise variants for a shape by
//! the emulator's predicted GPU time — the emulator's time model (launch overhead,
//! occupancy, waves, issue and tensor-core rates, exposed memory latency) of the A100 (sm_80)
//! or H100 (sm_90), calibrated within 1.5× of every H100 measurement in
//! `ptx-emu/data/measured_h100.json`, fed with the emulator's counters, **not a
//! measurement** — after holding each variant's result on that very problem to the f64
//! reference.

use kernel_gen::emu::Module;
use kernel_gen::{Arch, KernelOp, KernelSpec, emit_ptx};
use retention_core::Dtype;

use crate::byte_size::saturating_product;
use crate::error::CliError;
use crate::progress;
use retention_check::io::gammas_for;
use retention_check::{chunkwise, two_phase};
use retention_core::RetentionShape;
use retention_runtime::Device;
use retention_runtime::autotune_cache::gpu_tuning_candidates;
use retention_runtime::cuda_target::CudaTarget;
use retention_runtime::kernel_timing::{KernelTimer, default_gpu_model};
use retention_runtime::launch_target::LaunchTarget;

use super::cache::{CandidateTiming, ShapeBucket};

/// Most emulated work (rows × heads × T × K × V) per candidate: about a second each.
pub const EMULATION_LIMIT: u64 = 64 << 20;

/// How the emulated timings are obtained, stored with every entry.
pub const METHOD: &str = "emulator predicted time (time model of an A100 for sm_80, an H100 \
                          for sm_90, calibrated against H100 measurements; not a measurement)";

/// What is tuned for the bucket on `arch` ([`gpu_tuning_candidates`]): the catalog's one-pass
/// chunkwise variants for (K, V, dtype) and `heads` heads, then the two-phase forward for each
/// chunk where the runtime's plan applies.
///
/// # Errors
/// [`CliError::BadFlag`] naming the shape when no variant serves it.
pub fn candidates(
    bucket: &ShapeBucket,
    (heads, dk, dv): (usize, usize, usize),
    dtype: Dtype,
    arch: Arch,
) -> Result<Vec<KernelSpec>, CliError> {
    let specs = gpu_tuning_candidates(*bucket, (heads, dk, dv), dtype, arch);
    if specs.is_empty() {
        return Err(CliError::BadFlag(format!(
            "no catalog chunkwise kernel serves K={dk} V={dv} {} on {arch}",
            dtype.name()
        )));
    }
    Ok(specs)
}

/// Check `spec` against the reference on `target`: the one-pass check on (bucket batch,
/// `heads`, bucket T), or the two-phase check (both phases) for a segmented candidate.
fn check_candidate(
    spec: &KernelSpec,
    target: &dyn LaunchTarget,
    bucket: &ShapeBucket,
    heads: usize,
    seed: u64,
) -> Result<retention_check::EmuCheck, String> {
    if spec.op == KernelOp::ChunkwiseSegmented {
        two_phase::check(spec, target, seed)
    } else {
        chunkwise::check_on(spec, target, (bucket.batch, heads, bucket.seq_len), seed)
    }
}

/// Emulate every candidate on (bucket batch, `heads`, bucket T), check it against the
/// reference, and record its predicted time.
///
/// # Errors
/// [`CliError::BadFlag`] when the problem is too large to emulate; [`CliError::VerifyFailed`]
/// (exit 1) when a candidate fails to emulate or is off the reference.
pub fn time_candidates(
    specs: &[KernelSpec],
    bucket: &ShapeBucket,
    heads: usize,
) -> Result<Vec<CandidateTiming>, CliError> {
    let work = saturating_product(&[bucket.batch, heads, bucket.seq_len, bucket.dk, bucket.dv]);
    if work > EMULATION_LIMIT {
        return Err(CliError::BadFlag(format!(
            "B·H·T·K·V = {work} is too much to emulate (limit {EMULATION_LIMIT}); use a smaller \
             --seq-len or --batch"
        )));
    }
    let bar = progress::bar(specs.len(), "autotune");
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        bar.set_message(spec.slug());
        let failed = |why: String| CliError::VerifyFailed(format!("{}: {why}", spec.slug()));
        let ptx = emit_ptx(spec).map_err(|e| failed(e.to_string()))?;
        let module = Module::parse(&ptx).map_err(|e| failed(e.to_string()))?;
        let check =
            check_candidate(spec, &module, bucket, heads, 7000 + i as u64).map_err(failed)?;
        if let Some(why) = check.failure(spec.dtype) {
            return Err(failed(why));
        }
        let seconds = if spec.op == KernelOp::ChunkwiseSegmented {
            // Both phases on the bucket's problem (the check ran its own small one).
            let timer = KernelTimer::new(&Device::Emulated(spec.arch), 1)?;
            let gammas = gammas_for(spec.gammas, heads).map_err(failed)?;
            let shape =
                RetentionShape::new(bucket.batch, bucket.seq_len, heads, bucket.dk, bucket.dv)?;
            timer.chunkwise_spec(spec, &gammas, &shape)?.seconds
        } else {
            let report = check
                .report
                .ok_or_else(|| failed("the emulator gave no report".into()))?;
            let model = default_gpu_model(spec.arch);
            report
                .emulated()
                .map_or(report.seconds(spec.arch), |r| r.predict(&model).seconds)
        };
        out.push(CandidateTiming {
            chunk: spec.chunk.unwrap_or(0) as usize,
            seconds,
            runs: 1,
            kernel: Some(spec.slug()),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// `autotune --device cuda`: every candidate is first held to the f64 reference on the GPU
/// (the catalog check, run by the device), then timed with device events — the median of
/// repeated launches on (bucket batch, `heads`, bucket T).
///
/// # Errors
/// [`CliError::VerifyFailed`] (exit 1) when a candidate fails on the GPU or is off the
/// reference; device errors.
pub fn time_on_gpu(
    target: &CudaTarget,
    specs: &[KernelSpec],
    bucket: &ShapeBucket,
    heads: usize,
    quick: bool,
) -> Result<Vec<CandidateTiming>, CliError> {
    let device = Device::Cuda(target.backend().ordinal());
    let reps = if quick { 5 } else { 25 };
    let timer = KernelTimer::new(&device, reps)?;
    let shape = RetentionShape::new(bucket.batch, bucket.seq_len, heads, bucket.dk, bucket.dv)?;
    let bar = progress::bar(specs.len(), "autotune");
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        bar.set_message(spec.slug());
        let failed = |why: String| CliError::VerifyFailed(format!("{}: {why}", spec.slug()));
        let check =
            check_candidate(spec, target, bucket, heads, 7000 + i as u64).map_err(failed)?;
        if let Some(why) = check.failure(spec.dtype) {
            return Err(failed(why));
        }
        let gammas = gammas_for(spec.gammas, heads).map_err(failed)?;
        let t = timer.chunkwise_spec(spec, &gammas, &shape)?;
        out.push(CandidateTiming {
            chunk: spec.chunk.unwrap_or(0) as usize,
            seconds: t.seconds,
            runs: reps,
            kernel: Some(spec.slug()),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}
