//! What the emulator checks share: buffers in and out of each dtype, the test gammas, finding
//! a named parameter, and the verdict against the reference with its tolerances (those of
//! `tests/decode_emulated.rs` and `tests/chunkwise_emulated.rs`).

use half::{bf16, f16};
use kernel_gen::emu::{Buffer, Dtype as EmuDtype};
use kernel_gen::{GammaSet, KernelSpec};
use retention_core::{Dtype, Element, Gammas, HostTensor};

use retention_runtime::launch_target::LaunchReport;

/// How close the emulated kernel came to the reference.
#[derive(Debug, Clone)]
pub struct EmuCheck {
    /// Worst output error over the steps (max relative for f32, relative RMSE for 16-bit).
    pub o_error: f64,
    /// Worst state error (max relative).
    pub state_error: f64,
    /// The last launch's report: the emulator's counters and predicted A100/H100 times, or
    /// the time a real GPU measured.
    pub report: Option<LaunchReport>,
    /// Shared-memory reads, over every emulated launch of the check, that touched a byte
    /// nothing had written (0 on a GPU, which cannot tell).
    pub unwritten_shared_reads: u64,
}

/// The shared-memory reads of `report` that touched never-written bytes (0 unless emulated).
pub fn unwritten_shared_reads(report: &LaunchReport) -> u64 {
    report.emulated().map_or(0, |r| r.shared_uninit_reads)
}

impl EmuCheck {
    /// The output tolerance for `dtype`.
    pub fn o_tolerance(dtype: Dtype) -> f64 {
        match dtype {
            Dtype::F32 => 1e-5,
            Dtype::F16 | Dtype::Bf16 => 5e-3,
        }
    }

    /// Why the result is off, or `None` when within tolerance (and, for 16-bit kernels, no
    /// read of never-written shared memory).
    pub fn failure(&self, dtype: Dtype) -> Option<String> {
        let tol = Self::o_tolerance(dtype);
        if self.o_error.is_nan() || self.o_error > tol {
            Some(format!("output error {:.2e} > {tol:.0e}", self.o_error))
        } else if self.state_error.is_nan() || self.state_error > 1e-5 {
            Some(format!("state error {:.2e} > 1e-5", self.state_error))
        } else if dtype != Dtype::F32 && self.unwritten_shared_reads > 0 {
            // 16-bit kernels stage (or zero-fill) every shared byte they read; the f32 FMA
            // paths read stale rows past a partial chunk by design and mask them with selp.
            Some(format!(
                "{} reads of shared memory nothing had written",
                self.unwritten_shared_reads
            ))
        } else {
            None
        }
    }
}

/// Heads a sequence check runs `spec` with: a named set's own, 3 for runtime γ (a fast, a
/// near-one and a moderate decay; see [`gammas_for`]).
pub fn check_heads(spec: &KernelSpec) -> usize {
    match spec.gammas {
        GammaSet::Retnet { heads } => heads as usize,
        GammaSet::Runtime => 3,
    }
}

/// Emulated work of a state-carrying kernel over `rows` × `heads` × `tokens`: one K × V
/// state product per token and head — the sampled sweeps' budget measure.
pub fn state_work(spec: &KernelSpec, rows: usize, heads: usize, tokens: usize) -> usize {
    rows * heads * tokens * spec.k as usize * spec.v as usize
}

/// An f64 tensor for the reference, shape errors as one-line strings.
///
/// # Errors
/// The shape does not hold `data`.
pub fn tensor(shape: Vec<usize>, data: &[f64]) -> Result<HostTensor<f64>, String> {
    HostTensor::new(shape, data.to_vec()).map_err(|e| e.to_string())
}

/// The decays a spec is checked with: its named set, or for runtime γ `heads` decays cycling
/// through a fast head, one so slow that γ rounds to 1 in f32 (only log2 γ can carry it), and
/// a moderate one.
///
/// # Errors
/// The gamma set's own error (none for the catalog's sets).
pub fn gammas_for(set: GammaSet, heads: usize) -> Result<Gammas, String> {
    const RUNTIME: [f64; 3] = [0.3, 1.0 - 1.0 / (1u64 << 30) as f64, 0.97];
    match set {
        GammaSet::Retnet { heads } => Gammas::retnet(heads as usize),
        GammaSet::Runtime => {
            Gammas::from_list((0..heads).map(|h| RUNTIME[h % RUNTIME.len()]).collect())
        }
    }
    .map_err(|e| e.to_string())
}

/// `values` (already representable) as a buffer of `dtype`.
pub fn input_buffer(dtype: Dtype, values: &[f64]) -> Buffer {
    match dtype {
        Dtype::F32 => Buffer::from_f32(&values.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        Dtype::F16 => Buffer::from_f16(
            &values
                .iter()
                .map(|&x| <f16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
        Dtype::Bf16 => Buffer::from_bf16(
            &values
                .iter()
                .map(|&x| <bf16 as Element>::from_f64(x))
                .collect::<Vec<_>>(),
        ),
    }
}

/// A buffer of `dtype` widened exactly to f64.
pub fn output_values(dtype: Dtype, buf: &Buffer) -> Vec<f64> {
    match dtype {
        Dtype::F32 => buf.to_f32().into_iter().map(f64::from).collect(),
        Dtype::F16 => buf
            .to_u16()
            .into_iter()
            .map(|b| f16::from_bits(b).to_f64())
            .collect(),
        Dtype::Bf16 => buf
            .to_u16()
            .into_iter()
            .map(|b| bf16::from_bits(b).to_f64())
            .collect(),
    }
}

/// The emulator's name for `dtype`.
pub fn emu_dtype(dtype: Dtype) -> EmuDtype {
    match dtype {
        Dtype::F32 => EmuDtype::F32,
        Dtype::F16 => EmuDtype::F16,
        Dtype::Bf16 => EmuDtype::Bf16,
    }
}

/// Where parameter `name` sits in `names`.
///
/// # Errors
/// A one-line reason naming the spec when it has no such parameter.
pub fn position(names: &[&str], name: &str, spec: &KernelSpec) -> Result<usize, String> {
    names
        .iter()
        .position(|n| *n == name)
        .ok_or_else(|| format!("{} has no `{name}` parameter", spec.slug()))
}
