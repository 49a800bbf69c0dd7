//! γ^n from log2 γ, on non-negative relative exponents only.

/// γ^n computed as `exp2(n · log2 γ)`. With `n ≥ 0` and `log2 γ < 0` the exponent is never
/// positive: nothing overflows, and terms beyond the decay horizon underflow to exactly 0.
pub fn decay(log2_gamma: f64, n: usize) -> f64 {
    (n as f64 * log2_gamma).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_is_exact_at_zero_and_underflows_to_zero() {
        let l = (1.0f64 - 1.0 / 32.0).log2();
        assert_eq!(decay(l, 0), 1.0);
        assert!((decay(l, 3) - (31.0f64 / 32.0).powi(3)).abs() < 1e-15);
        // 2^-1075 and below round to 0 in f64: n · 0.0458 > 1075 for n > 23,470.
        assert_eq!(decay(l, 24_000), 0.0);
        assert!(decay(l, 20_000) > 0.0);
    }
}
