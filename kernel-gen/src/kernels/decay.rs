//! Decays from log2 γ, accurate where it matters: γ close to 1.
//!
//! `ex2.approx.f32` is within about 2 ulp, i.e. up to ~2^-23 absolute near 1. For the slow
//! RetNet heads 1 − γ is tiny (2^-20 for head 15), so that error would change the decay *rate*
//! 1 − γ by more than 10 %. Near 1 we therefore compute 2^x = 1 + expm1(x·ln 2) with a short
//! Taylor polynomial whose only significant error is the final rounding of 1 + e; far from 1
//! (x < −1/16, where 1 − γ > 0.04) `ex2.approx` is already accurate relative to 1 − γ.

use crate::dsl::{Cmp, KernelBuilder, Reg};

/// Below this exponent `ex2.approx` is used; above it the polynomial.
pub const POLY_MIN_EXPONENT: f32 = -0.0625;

/// e^y − 1 for |y| ≤ ln2/16 by Horner's rule on 1 + y/2 + y²/6 + y³/24 (the next term,
/// y⁵/120 ≤ 1.3e-9, is below half an f32 ulp of 1). Mirrors the emitted instruction order.
pub fn expm1_poly_f32(y: f32) -> f32 {
    let p = (1.0f32 / 24.0).mul_add(y, 1.0 / 6.0);
    let p = p.mul_add(y, 0.5);
    let p = p.mul_add(y, 1.0);
    y * p
}

/// 2^x for x ≤ 0 exactly as the emitted code computes it (for host-side tests).
pub fn exp2_model_f32(x: f32) -> f32 {
    if x < POLY_MIN_EXPONENT {
        x.exp2()
    } else {
        1.0 + expm1_poly_f32(x * std::f32::consts::LN_2)
    }
}

/// Emit 2^x for an f32 register x ≤ 0 (a relative decay exponent).
pub fn emit_exp2(kb: &mut KernelBuilder, x: Reg) -> Reg {
    let far = kb.ex2(x, false);
    let y = kb.mul(x, std::f32::consts::LN_2);
    let p = kb.fma(y, 1.0f32 / 24.0, 1.0f32 / 6.0);
    let p = kb.fma(p, y, 0.5f32);
    let p = kb.fma(p, y, 1.0f32);
    let e = kb.mul(y, p);
    let near = kb.add(e, 1.0f32);
    let is_far = kb.setp(Cmp::Lt, x, POLY_MIN_EXPONENT);
    kb.selp(far, near, is_far)
}

#[cfg(test)]
mod tests {
    use super::*;
    use retention_core::Gammas;

    /// Distance in f32 ulps (both positive, below 1).
    fn ulps(a: f32, b: f32) -> i64 {
        (i64::from(a.to_bits()) - i64::from(b.to_bits())).abs()
    }

    #[test]
    fn retnet_decays_are_within_one_ulp_of_exact() {
        let g = Gammas::retnet(48).unwrap();
        for h in 0..48 {
            let exact = g.get(h) as f32;
            let got = exp2_model_f32(g.log2(h) as f32);
            assert!(ulps(got, exact) <= 1, "head {h}: {got:e} vs {exact:e}");
        }
        // head 15: 1 - 2^-20 is exact in f32 and must come out exact.
        assert_eq!(exp2_model_f32(g.log2(15) as f32), 1.0 - 2f32.powi(-20));
    }

    #[test]
    fn polynomial_branch_is_accurate_to_its_edge() {
        for i in 0..=1000 {
            let x = POLY_MIN_EXPONENT * i as f32 / 1000.0;
            let exact = (f64::from(x)).exp2() as f32;
            assert!(ulps(exp2_model_f32(x), exact) <= 1, "x = {x}");
        }
    }
}
