//! `autotune --device emulated`: choose among the catalog's chunkwise variants for a shape by
//! the emulator's predicted GPU time — a roofline model of the A100 (sm_80) or H100 (sm_90)
//! fed with the emulator's counters, **not a measurement** — after holding each variant's
//! result on that very problem to the f64 reference.

use kernel_gen::emu::Module;
use kernel_gen::{Arch, GammaSet, KernelOp, KernelSpec, catalog, emit_ptx};
use retention_core::Dtype;

use crate::byte_size::saturating_product;
use crate::error::CliError;
use crate::progress;
use retention_runtime::catalog_check::chunkwise;

use super::cache::{CandidateTiming, ShapeBucket};

/// Most emulated work (rows × heads × T × K × V) per candidate: about a second each.
pub const EMULATION_LIMIT: u64 = 64 << 20;

/// How the emulated timings are obtained, stored with every entry.
pub const METHOD: &str = "emulator predicted time (roofline model, not a measurement)";

/// The GPU whose roofline model predicts `arch`'s times.
pub fn predicted_gpu(arch: Arch) -> &'static str {
    match arch {
        Arch::Sm80 => "A100-80 SXM",
        Arch::Sm90 => "H100 SXM",
    }
}

/// The catalog's chunkwise variants for (K, V, dtype, arch) and `heads` heads: those with the
/// RetNet decays of exactly `heads` heads when the catalog has them, else the runtime-γ ones.
///
/// # Errors
/// [`CliError::BadFlag`] naming the shape when no variant serves it.
pub fn candidates(
    heads: usize,
    dk: usize,
    dv: usize,
    dtype: Dtype,
    arch: Arch,
) -> Result<Vec<KernelSpec>, CliError> {
    let shape: Vec<KernelSpec> = catalog::default_catalog()
        .into_iter()
        .filter(|s| {
            s.op == KernelOp::Chunkwise
                && s.k as usize == dk
                && s.v as usize == dv
                && s.dtype == dtype
                && s.arch == arch
        })
        .collect();
    let named = GammaSet::Retnet {
        heads: u32::try_from(heads).unwrap_or(u32::MAX),
    };
    let wanted = if shape.iter().any(|s| s.gammas == named) {
        named
    } else {
        GammaSet::Runtime
    };
    let specs: Vec<KernelSpec> = shape.into_iter().filter(|s| s.gammas == wanted).collect();
    if specs.is_empty() {
        return Err(CliError::BadFlag(format!(
            "no catalog chunkwise kernel serves K={dk} V={dv} {} on {arch}",
            dtype.name()
        )));
    }
    Ok(specs)
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
        let check = chunkwise::check_on(
            spec,
            &module,
            (bucket.batch, heads, bucket.seq_len),
            7000 + i as u64,
        )
        .map_err(failed)?;
        if let Some(why) = check.failure(spec.dtype) {
            return Err(failed(why));
        }
        let report = check
            .report
            .ok_or_else(|| failed("the emulator gave no report".into()))?;
        let seconds = report.seconds(spec.arch);
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
