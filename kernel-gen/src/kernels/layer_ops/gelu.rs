//! The tanh-form GELU in place, `x ← x · σ(2u)`, u = √(2/π)·(x + 0.044715·x³) (equal to
//! `x/2 · (1 + tanh u)`), one thread per [`GELU_PER_THREAD`] consecutive elements (see
//! [`super`] for the mapping).
//!
//! | # | name  | type   | meaning                                  |
//! |---|-------|--------|------------------------------------------|
//! | 0 | `p_x` | `.u64` | x `[n]` in the spec's dtype (read, written) |
//! | 1 | `p_n` | `.u32` | n, elements                              |
//!
//! σ(z) = 1 / (1 + 2^(−z·log2 e)) with `ex2.approx` and `rcp.approx` (a few ulp): 0 far
//! below 0, 1 far above, so x·σ(2u) keeps its relative accuracy at both ends.

use super::{GELU_PARAMS, GELU_PER_THREAD, open_kernel};
use crate::GenError;
use crate::blocks::global::{load_f32_masked, store_from_f32_masked};
use crate::dsl::{Address, Axis, KernelBuilder, Precision, Reg, Sreg, Ty};
use crate::spec::KernelSpec;

/// √(2/π).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// 2·log2 e, for σ(2u) = 1 / (1 + 2^(−u·2·log2 e)).
const TWO_LOG2_E: f32 = 2.0 * std::f32::consts::LOG2_E;

/// Emit the kernel for a validated `spec`.
pub(super) fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let formula = "x = x * sigmoid(2 * sqrt(2/pi) * (x + 0.044715 x^3))";
    let head = ("GELU (tanh form) in place", formula);
    let (mut kb, params) = open_kernel(spec, head, GELU_PARAMS, &[("p_n", Ty::U32)]);
    let [p_x, p_n] = &params;
    let (dtype, per) = (spec.dtype, GELU_PER_THREAD);
    kb.comment("thread i serves elements 4i .. 4i + 4");
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let cta = kb.sreg(Sreg::Ctaid(Axis::X));
    let i = kb.mad_lo(cta, spec.tile.threads, t);
    let col = kb.mul_lo(i, per);
    let n = kb.ld_param(p_n);
    let bytes = kb.mul_wide(col, dtype.size_bytes() as u32);
    let base = kb.global_ptr(p_x);
    let at = kb.add(base, bytes);
    let xs = load_f32_masked(
        &mut kb,
        (dtype, per as usize),
        Address::reg(at, 0),
        col,
        n,
        spec.v,
    );
    let ys: Vec<Reg> = xs.iter().map(|&x| gelu(&mut kb, x)).collect();
    store_from_f32_masked(&mut kb, dtype, Address::reg(at, 0), &ys, col, n, spec.v);
    kb.ret();
    kb.finish()
}

/// x · σ(2u), u = √(2/π)·(x + 0.044715·x³), in f32.
fn gelu(kb: &mut KernelBuilder, x: Reg) -> Reg {
    let x2 = kb.mul(x, x);
    let inner = kb.fma(x2, 0.044_715f32, 1.0f32);
    let xi = kb.mul(x, inner);
    let u = kb.mul(xi, SQRT_2_OVER_PI);
    let z = kb.mul(u, -TWO_LOG2_E);
    let e = kb.ex2(z, true);
    let den = kb.add(e, 1.0f32);
    let sig = kb.rcp(den, Precision::Approx);
    kb.mul(x, sig)
}
