//! Correctly rounded narrowing of f64 to f16 and bf16 (round to nearest, ties to even), so
//! the oracle and the tools round exactly once.
//!
//! Why not `half::{f16, bf16}::from_f64`: half 2.x drops the low 32 bits of the f64 mantissa
//! before rounding (and for f16 on x86 with F16C it goes through f32), so a value just above a
//! tie can round the wrong way — e.g. 1 + 2⁻⁸ + 2⁻⁴⁰ becomes bf16 1.0 instead of 1 + 2⁻⁷.
//! f64 → f32 needs nothing special: Rust's `as` cast is IEEE round-to-nearest-even.

/// A binary interchange format narrower than f64.
struct Format {
    /// Significand bits including the implicit leading one.
    precision: u32,
    /// Exponent bias (also the largest unbiased exponent).
    bias: i32,
    /// Width of the exponent field.
    exp_bits: u32,
}

const F16: Format = Format {
    precision: 11,
    bias: 15,
    exp_bits: 5,
};

const BF16: Format = Format {
    precision: 8,
    bias: 127,
    exp_bits: 8,
};

/// Bits of the f16 nearest to `x` (ties to even; overflow to ±∞; NaN stays NaN).
pub fn f64_to_f16_bits(x: f64) -> u16 {
    round_to(x, &F16)
}

/// Bits of the bf16 nearest to `x` (ties to even; overflow to ±∞; NaN stays NaN).
pub fn f64_to_bf16_bits(x: f64) -> u16 {
    round_to(x, &BF16)
}

fn round_to(x: f64, f: &Format) -> u16 {
    let frac_bits = f.precision - 1;
    let sign = ((x.to_bits() >> 63) as u16) << 15;
    let inf = (((1u32 << f.exp_bits) - 1) << frac_bits) as u16;
    if x.is_nan() {
        return sign | inf | (1 << (frac_bits - 1));
    }
    let a = x.abs();
    if a == 0.0 {
        return sign;
    }
    if a.is_infinite() {
        return sign | inf;
    }
    let bits = a.to_bits();
    let raw_exp = (bits >> 52) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    // a = m · 2^(e − 52), m a 53-bit integer (f64 subnormals are far below either format).
    let (e, m) = if raw_exp == 0 {
        (-1022, frac)
    } else {
        (raw_exp - 1023, frac | (1u64 << 52))
    };
    let (emin, emax) = (1 - f.bias, f.bias);
    if e > emax {
        return sign | inf;
    }
    // The target's spacing at this magnitude is 2^quantum; subnormals share emin's spacing.
    let quantum = e.max(emin) - frac_bits as i32;
    let shift = quantum - (e - 52);
    if shift >= 54 {
        // a < 2^(quantum − 1): below half the smallest subnormal, rounds to zero.
        return sign;
    }
    let shift = shift as u32;
    let mut n = m >> shift;
    let rem = m & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rem > half || (rem == half && n & 1 == 1) {
        n += 1;
    }
    // Subnormal: the significand is the encoding (n = 2^frac_bits is the smallest normal).
    // Normal: n ∈ [2^frac_bits, 2^precision]; a carry out of the fraction bumps the exponent.
    let enc = if e < emin {
        n
    } else {
        (((e + f.bias - 1) as u64) << frac_bits) + n
    };
    if enc >= u64::from(inf) {
        sign | inf
    } else {
        sign | enc as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    /// Check every tie and its neighbours between consecutive positive values of a format,
    /// using an oracle independent of `round_to`: the nearest of the two bracketing values,
    /// decided by comparing with their midpoint (exact in f64), ties to the even pattern.
    fn check_format(decode: impl Fn(u16) -> f64, round: impl Fn(f64) -> u16, inf: u16, f: &Format) {
        let overflow_edge = 2f64.powi(f.bias + 1);
        for p in 0..inf {
            let lo = decode(p);
            let hi = if p + 1 == inf {
                overflow_edge
            } else {
                decode(p + 1)
            };
            let mid = (lo + hi) / 2.0;
            let even = if p % 2 == 0 { p } else { p + 1 };
            let nudge = mid * 2f64.powi(-40);
            let cases = [
                (lo, p),
                (mid, even),
                (mid.next_up(), p + 1),
                (mid.next_down(), p),
                (mid + nudge, p + 1),
                (mid - nudge, p),
            ];
            for (x, want) in cases {
                if p == 0 && x <= 0.0 {
                    continue;
                }
                assert_eq!(
                    round(x),
                    want,
                    "x = {x:e} between patterns {p:#06x}, {:#06x}",
                    p + 1
                );
                assert_eq!(round(-x), want | 0x8000, "x = {:e}", -x);
            }
        }
    }

    #[test]
    fn f16_rounding_is_correct_at_every_tie() {
        check_format(
            |p| f16::from_bits(p).to_f64(),
            f64_to_f16_bits,
            0x7C00,
            &F16,
        );
    }

    #[test]
    fn bf16_rounding_is_correct_at_every_tie() {
        check_format(
            |p| bf16::from_bits(p).to_f64(),
            f64_to_bf16_bits,
            0x7F80,
            &BF16,
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(f64_to_f16_bits(0.0), 0);
        assert_eq!(f64_to_f16_bits(-0.0), 0x8000);
        assert_eq!(f64_to_f16_bits(f64::INFINITY), 0x7C00);
        assert_eq!(f64_to_bf16_bits(f64::NEG_INFINITY), 0xFF80);
        assert!(f16::from_bits(f64_to_f16_bits(f64::NAN)).is_nan());
        assert!(bf16::from_bits(f64_to_bf16_bits(f64::NAN)).is_nan());
        assert_eq!(f64_to_f16_bits(1e300), 0x7C00);
        assert_eq!(f64_to_bf16_bits(-1e300), 0xFF80);
        assert_eq!(f64_to_f16_bits(1e-300), 0);
        assert_eq!(f64_to_f16_bits(f64::MIN_POSITIVE / 4.0), 0);
        assert_eq!(f64_to_bf16_bits(-1e-300), 0x8000);
        // 65519.99 rounds to the largest f16 (65504); the tie 65520 overflows to ∞.
        assert_eq!(f64_to_f16_bits(65519.99), 0x7BFF);
        assert_eq!(f64_to_f16_bits(65520.0), 0x7C00);
    }

    #[test]
    fn low_mantissa_bits_decide_near_ties() {
        // Just above the tie between 1 and 1 + 2⁻⁷: the 2⁻⁴⁰ lives in the f64's low 32 bits.
        let x = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(
            bf16::from_bits(f64_to_bf16_bits(x)).to_f64(),
            1.0 + 2f64.powi(-7)
        );
        let y = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(
            f16::from_bits(f64_to_f16_bits(y)).to_f64(),
            1.0 + 2f64.powi(-10)
        );
        // Just below a tie that f32 would round onto (double rounding through f32).
        let z = 1.0 + 3.0 * 2f64.powi(-11) - 2f64.powi(-40);
        assert_eq!(
            f16::from_bits(f64_to_f16_bits(z)).to_f64(),
            1.0 + 2f64.powi(-10)
        );
    }
}
