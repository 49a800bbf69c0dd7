//! PTX scalar types and the bit-level helpers every instruction uses.
//!
//! Registers hold raw bits in a `u64`; an instruction's type says how to read them. Narrow
//! integer results are stored sign- or zero-extended so a wider read of the same register
//! sees the value PTX would give.

/// A PTX fundamental type as written in an instruction suffix (`.f32`, `.u64`, `.pred`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    F32,
    F64,
    Pred,
}

impl Ty {
    /// Parses a suffix without its dot (`"f32"`).
    pub(crate) fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Width in bits (predicates count as 1).
    pub(crate) fn bits(self) -> u32 {
        match self {
            Ty::Pred => 1,
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
        }
    }

    /// Width in bytes as stored in memory.
    pub(crate) fn bytes(self) -> u32 {
        self.bits().div_ceil(8)
    }

    pub(crate) fn is_signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub(crate) fn is_float(self) -> bool {
        matches!(
            self,
            Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2 | Ty::F32 | Ty::F64
        )
    }

    /// The scalar float format, for scalar float types.
    pub(crate) fn float_fmt(self) -> Option<Fmt> {
        match self {
            Ty::F16 => Some(Fmt::F16),
            Ty::Bf16 => Some(Fmt::Bf16),
            Ty::F32 => Some(Fmt::F32),
            Ty::F64 => Some(Fmt::F64),
            _ => None,
        }
    }

    /// Keeps the low `bits()` bits, sign-extending signed types to 64 bits.
    pub(crate) fn normalize(self, v: u64) -> u64 {
        match self.bits() {
            64 => v,
            1 => v & 1,
            n => {
                if self.is_signed() {
                    sign_extend(v, n)
                } else {
                    v & ((1u64 << n) - 1)
                }
            }
        }
    }

    /// Reads the value as a signed or unsigned integer of this type's width.
    pub(crate) fn int_value(self, v: u64) -> i128 {
        let n = self.bits();
        if self.is_signed() {
            sign_extend(v, n) as i64 as i128
        } else if n == 64 {
            v as i128
        } else {
            (v & ((1u64 << n) - 1)) as i128
        }
    }
}

/// Sign-extends the low `bits` bits of `v`.
pub(crate) fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        return v;
    }
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

/// Rounding modifier of a float instruction or conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rnd {
    /// `.rn`: to nearest, ties to even (the default).
    Rn,
    /// `.rz`: toward zero.
    Rz,
    /// `.rm`: toward minus infinity.
    Rm,
    /// `.rp`: toward plus infinity.
    Rp,
}

/// Integer-rounding modifier of a float-to-int (or float-to-integral-float) conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntRnd {
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

impl IntRnd {
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            IntRnd::Rni => x.round_ties_even(),
            IntRnd::Rzi => x.trunc(),
            IntRnd::Rmi => x.floor(),
            IntRnd::Rpi => x.ceil(),
        }
    }
}

/// A scalar IEEE binary format that registers can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fmt {
    F16,
    Bf16,
    F32,
    F64,
}

impl Fmt {
    pub(crate) fn bits(self) -> u32 {
        match self {
            Fmt::F16 | Fmt::Bf16 => 16,
            Fmt::F32 => 32,
            Fmt::F64 => 64,
        }
    }

    /// Exact value of the bits as f64 (every format here widens exactly).
    pub(crate) fn to_f64(self, v: u64) -> f64 {
        match self {
            Fmt::F16 => half::f16::from_bits(v as u16).to_f64(),
            Fmt::Bf16 => half::bf16::from_bits(v as u16).to_f64(),
            Fmt::F32 => f32::from_bits(v as u32) as f64,
            Fmt::F64 => f64::from_bits(v),
        }
    }

    fn round_nearest_even(self, x: f64) -> u64 {
        match self {
            // Via f32 rounded to odd: f32 keeps more than two extra bits over both 16-bit
            // formats, so the second rounding is exact-equivalent. (`half`'s direct f64
            // conversion mis-rounds some bf16 cases, e.g. f32 bits 0x85F48004.)
            Fmt::F16 => half::f16::from_f32(f32_round_to_odd(x)).to_bits() as u64,
            Fmt::Bf16 => half::bf16::from_f32(f32_round_to_odd(x)).to_bits() as u64,
            Fmt::F32 => (x as f32).to_bits() as u64,
            Fmt::F64 => x.to_bits(),
        }
    }

    fn sign_bit(self) -> u64 {
        1u64 << (self.bits() - 1)
    }

    fn is_nan_bits(self, v: u64) -> bool {
        self.to_f64(v).is_nan()
    }

    fn inf_bits(self) -> u64 {
        match self {
            Fmt::F16 => 0x7c00,
            Fmt::Bf16 => 0x7f80,
            Fmt::F32 => 0x7f80_0000,
            Fmt::F64 => 0x7ff0_0000_0000_0000,
        }
    }

    /// The canonical quiet NaN PTX produces.
    pub(crate) fn nan_bits(self) -> u64 {
        match self {
            Fmt::F16 | Fmt::Bf16 => 0x7fff,
            Fmt::F32 => 0x7fff_ffff,
            Fmt::F64 => 0x7fff_ffff_ffff_ffff,
        }
    }

    fn next_up(self, v: u64) -> u64 {
        let sign = self.sign_bit();
        if self.is_nan_bits(v) || v == self.inf_bits() {
            return v;
        }
        if v & !sign == 0 {
            return 1;
        }
        if v & sign == 0 { v + 1 } else { v - 1 }
    }

    fn next_down(self, v: u64) -> u64 {
        let sign = self.sign_bit();
        self.next_up(v ^ sign) ^ sign
    }

    /// Flushes a subnormal to a zero of the same sign (`.ftz`).
    pub(crate) fn flush(self, v: u64) -> u64 {
        let x = self.to_f64(v);
        if x != 0.0 && x.is_finite() && self == Fmt::F32 && x.abs() < f32::MIN_POSITIVE as f64 {
            v & self.sign_bit()
        } else {
            v
        }
    }

    /// Rounds the exact value `hi + tail` (where `tail` is only known by its sign, and
    /// `|tail|` is below half an ulp of `hi` in f64) to this format with `rnd`.
    pub(crate) fn round(self, hi: f64, tail: f64, rnd: Rnd) -> u64 {
        if hi.is_nan() {
            return self.nan_bits();
        }
        let r = self.round_nearest_even(hi);
        let back = self.to_f64(r);
        // Sign of (exact - back).
        let dir = if hi > back {
            1
        } else if hi < back {
            -1
        } else if tail > 0.0 {
            1
        } else if tail < 0.0 {
            -1
        } else {
            0
        };
        match rnd {
            Rnd::Rn => {
                if hi != back && tail != 0.0 && back.is_finite() {
                    // A tie in `hi` that the tail breaks.
                    let other = if hi > back {
                        self.next_up(r)
                    } else {
                        self.next_down(r)
                    };
                    let ov = self.to_f64(other);
                    if ov.is_finite() && (ov + back) / 2.0 == hi {
                        let toward_other = (hi > back) == (tail > 0.0);
                        return if toward_other { other } else { r };
                    }
                }
                r
            }
            Rnd::Rz => {
                let neg = back.is_sign_negative();
                if (dir < 0 && !neg) || (dir > 0 && neg) {
                    if neg {
                        self.next_up(r)
                    } else {
                        self.next_down(r)
                    }
                } else {
                    r
                }
            }
            Rnd::Rm => {
                if dir < 0 {
                    self.next_down(r)
                } else {
                    r
                }
            }
            Rnd::Rp => {
                if dir > 0 {
                    self.next_up(r)
                } else {
                    r
                }
            }
        }
    }

    /// Rounds an integer to this format with `rnd`.
    pub(crate) fn round_int(self, v: i128, rnd: Rnd) -> u64 {
        let hi = v as f64; // correctly rounded (ties to even)
        // Exact residual sign: compare the integer with the f64 (an integer when |hi| ≥ 1).
        let back = hi as i128;
        let tail = (v - back).signum() as f64;
        self.round(hi, tail, rnd)
    }
}

/// `x` rounded to f32 with round-to-odd: when inexact, the neighbour with an odd
/// significand, so a later rounding to a narrower format is not a double rounding.
fn f32_round_to_odd(x: f64) -> f32 {
    let r = x as f32;
    if !r.is_finite() || r as f64 == x || r.to_bits() & 1 == 1 {
        return r;
    }
    // Step from the even nearest value toward x: the other bracketing neighbour, odd.
    let toward_x_is_up = (x > r as f64) == (r >= 0.0);
    let bits = r.to_bits();
    let stepped = if r == 0.0 {
        // ±0 with x on one side: the smallest subnormal of x's sign.
        if x > 0.0 { 1 } else { 0x8000_0001 }
    } else if toward_x_is_up {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(stepped)
}

/// Error-free sum: returns `(s, t)` with `s + t == a + b` exactly.
pub(crate) fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    let t = (a - (s - bb)) + (b - bb);
    (s, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_rounding_brackets_the_exact_value() {
        let x = 1.0f64 + 2f64.powi(-13); // between two f16 values
        let dn = Fmt::F16.to_f64(Fmt::F16.round(x, 0.0, Rnd::Rm));
        let up = Fmt::F16.to_f64(Fmt::F16.round(x, 0.0, Rnd::Rp));
        assert_eq!(dn, 1.0);
        assert_eq!(up, 1.0 + 2f64.powi(-10));
        assert_eq!(Fmt::F16.to_f64(Fmt::F16.round(-x, 0.0, Rnd::Rz)), -1.0);
        assert_eq!(Fmt::F16.to_f64(Fmt::F16.round(1e9, 0.0, Rnd::Rz)), 65504.0);
        assert!(
            Fmt::F16
                .to_f64(Fmt::F16.round(1e9, 0.0, Rnd::Rn))
                .is_infinite()
        );
    }

    #[test]
    fn bf16_rounds_from_f64_correctly() {
        // f32 bits 0x85F48004: the dropped half 0x8004 is above the tie, so RNE rounds up
        // in magnitude to 0x85F5.
        let x = f32::from_bits(0x85F4_8004) as f64;
        assert_eq!(Fmt::Bf16.round(x, 0.0, Rnd::Rn), 0x85F5);
        // Exactly the tie rounds to even; a tie broken by bits beyond f32 does not.
        let tie = f32::from_bits(0x3F80_8000) as f64;
        assert_eq!(Fmt::Bf16.round(tie, 0.0, Rnd::Rn), 0x3F80);
        assert_eq!(Fmt::Bf16.round(tie + 1e-12, 0.0, Rnd::Rn), 0x3F81);
    }

    #[test]
    fn tail_breaks_ties() {
        let tie = 1.0f64 + 2f64.powi(-11); // exactly between 1 and 1+2^-10 in f16
        assert_eq!(
            Fmt::F16.to_f64(Fmt::F16.round(tie, 1e-30, Rnd::Rn)),
            1.0 + 2f64.powi(-10)
        );
        assert_eq!(Fmt::F16.to_f64(Fmt::F16.round(tie, -1e-30, Rnd::Rn)), 1.0);
        assert_eq!(Fmt::F16.to_f64(Fmt::F16.round(tie, 0.0, Rnd::Rn)), 1.0);
    }

    #[test]
    fn large_integers_round_exactly() {
        let v: i128 = (1 << 60) + 1;
        let up = f32::from_bits(Fmt::F32.round_int(v, Rnd::Rp) as u32);
        assert!(up as f64 > (1u64 << 60) as f64);
        let dn = f32::from_bits(Fmt::F32.round_int(v, Rnd::Rm) as u32);
        assert_eq!(dn as f64, (1u64 << 60) as f64);
    }
}
