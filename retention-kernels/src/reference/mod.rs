//! The f64 reference of every op of ARCHITECTURE §1 — the oracle every other implementation (CPU
//! kernels, emulated PTX, real GPUs) is checked against.
//!
//! Each form is written literally from its equation, in f64, with decays computed as
//! `exp2(n · log2 γ)` on non-negative relative exponents only. Layouts are token-major:
//! q, k `[B, T, H, K]`; v, o `[B, T, H, V]`; states `[B, H, K, V]`.

mod attention;
mod attention_prefill;
mod backward;
mod chunkwise;
mod decay;
mod epilogue;
mod epilogue_backward;
mod parallel;
mod parallel_backward;
mod problem;
mod recurrent;
mod varlen;

pub use attention::attention_decode;
pub use attention_prefill::attention_prefill;
pub use backward::{
    Gradients, chunkwise_backward, chunkwise_backward_varlen, recurrent_backward,
    recurrent_backward_varlen,
};
pub use chunkwise::chunkwise;
pub use decay::decay;
pub use epilogue::msr_epilogue;
pub use epilogue_backward::{EpilogueGradients, msr_epilogue_backward};
pub use parallel::parallel;
pub use parallel_backward::{ParallelGradients, parallel_backward};
pub use problem::RetentionParams;
pub use recurrent::{decode_step, recurrent};
pub use varlen::{chunkwise_varlen, recurrent_varlen};

/// Largest absolute elementwise difference of two equally long slices (∞ if lengths differ).
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Largest absolute difference relative to the largest magnitude of `reference` (floored at
/// 1e-300 so an all-zero reference compares absolutely).
pub fn max_rel_diff(actual: &[f64], reference: &[f64]) -> f64 {
    let scale = reference
        .iter()
        .fold(0.0_f64, |m, x| m.max(x.abs()))
        .max(1e-300);
    max_abs_diff(actual, reference) / scale
}

/// Root-mean-square difference relative to the root-mean-square of `reference`
/// (the metric for 16-bit dtypes in ARCHITECTURE §4: relative RMSE).
pub fn rel_rmse(actual: &[f64], reference: &[f64]) -> f64 {
    if actual.len() != reference.len() {
        return f64::INFINITY;
    }
    let err: f64 = actual
        .iter()
        .zip(reference)
        .map(|(a, r)| (a - r) * (a - r))
        .sum();
    let den: f64 = reference.iter().map(|r| r * r).sum();
    (err / den.max(1e-300)).sqrt()
}
