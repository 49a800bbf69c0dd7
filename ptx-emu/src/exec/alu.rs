//! Lane-level arithmetic: pure functions on register bits, one per instruction family.
//!
//! Float results are computed exactly or in f64 with an error term and then rounded once to
//! the destination format with the instruction's rounding mode (see [`Fmt::round`]). `.approx`
//! instructions are evaluated in f64 and rounded to the destination: more accurate than the
//! hardware's ≤2-ulp approximations, which tests must tolerate anyway.

use crate::decode::ops::{BoolOp, Cmp, FMods, FType, FloatOp, FloatUnOp, IntOp, IntUnOp, MadMode};
use crate::types::{Fmt, IntRnd, Rnd, Ty, sign_extend, two_sum};

/// An integer op's undefined case (division by zero).
pub(crate) type AluResult = Result<u64, &'static str>;

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub(crate) fn int_bin(op: IntOp, ty: Ty, a: u64, b: u64) -> AluResult {
    let bits = ty.bits();
    let ai = ty.int_value(a);
    let bi = ty.int_value(b);
    let wrap = |v: i128| ty.normalize(v as u64);
    Ok(match op {
        IntOp::Add => wrap(ai + bi),
        IntOp::Sub => wrap(ai - bi),
        IntOp::AddSat => (ai + bi).clamp(i32::MIN as i128, i32::MAX as i128) as i64 as u64,
        IntOp::SubSat => (ai - bi).clamp(i32::MIN as i128, i32::MAX as i128) as i64 as u64,
        IntOp::MulLo => wrap(ai.wrapping_mul(bi)),
        IntOp::MulHi => mul_hi(ty, a, b),
        IntOp::MulWide => {
            let p = ai * bi;
            let wide = if ty.is_signed() { Ty::S64 } else { Ty::U64 };
            if bits == 64 {
                return Err("mul.wide is not defined for 64-bit operands");
            }
            let wide_bits = 2 * bits;
            if ty.is_signed() {
                sign_extend(p as u64, wide_bits)
            } else {
                let _ = wide;
                (p as u64) & mask(wide_bits)
            }
        }
        IntOp::Div => {
            if bi == 0 {
                return Err("integer division by zero");
            }
            wrap(ai / bi)
        }
        IntOp::Rem => {
            if bi == 0 {
                return Err("integer remainder by zero");
            }
            wrap(ai % bi)
        }
        IntOp::Min => wrap(ai.min(bi)),
        IntOp::Max => wrap(ai.max(bi)),
        IntOp::And => ty.normalize(a & b),
        IntOp::Or => ty.normalize(a | b),
        IntOp::Xor => ty.normalize(a ^ b),
        IntOp::Shl => {
            let s = b as u32;
            if s >= bits { 0 } else { ty.normalize(a << s) }
        }
        IntOp::Shr => {
            let s = (b as u32).min(bits);
            if ty.is_signed() {
                let v = sign_extend(a, bits) as i64;
                ty.normalize((v >> s.min(63)) as u64)
            } else if s >= bits {
                0
            } else {
                ((a & mask(bits)) >> s) & mask(bits)
            }
        }
    })
}

/// The high half of the full product (64-bit unsigned operands need u128: the product of
/// two values near 2^64 does not fit in i128).
fn mul_hi(ty: Ty, a: u64, b: u64) -> u64 {
    let bits = ty.bits();
    if bits == 64 && !ty.is_signed() {
        ((a as u128 * b as u128) >> 64) as u64
    } else {
        ty.normalize(((ty.int_value(a) * ty.int_value(b)) >> bits) as u64)
    }
}

pub(crate) fn mad(mode: MadMode, ty: Ty, a: u64, b: u64, c: u64) -> AluResult {
    let bits = ty.bits();
    let ai = ty.int_value(a);
    let bi = ty.int_value(b);
    Ok(match mode {
        MadMode::Lo => ty.normalize(ai.wrapping_mul(bi).wrapping_add(ty.int_value(c)) as u64),
        MadMode::Hi => {
            ty.normalize((mul_hi(ty, a, b) as i128).wrapping_add(ty.int_value(c)) as u64)
        }
        MadMode::Wide => {
            let wide = if ty.is_signed() { Ty::S64 } else { Ty::U64 };
            if bits == 64 {
                return Err("mad.wide is not defined for 64-bit operands");
            }
            (ai * bi + wide.int_value(c)) as u64
        }
    })
}

pub(crate) fn int_un(op: IntUnOp, ty: Ty, a: u64) -> u64 {
    let bits = ty.bits();
    match op {
        IntUnOp::Neg => ty.normalize((-ty.int_value(a)) as u64),
        IntUnOp::Abs => ty.normalize(ty.int_value(a).unsigned_abs() as u64),
        IntUnOp::Not => ty.normalize(!a),
        IntUnOp::Cnot => u64::from(a & mask(bits) == 0),
        IntUnOp::Popc => (a & mask(bits)).count_ones() as u64,
        IntUnOp::Clz => ((a & mask(bits)).leading_zeros() - (64 - bits)) as u64,
        IntUnOp::Brev => ((a & mask(bits)).reverse_bits() >> (64 - bits)) & mask(bits),
    }
}

/// Runs a scalar float op on one format, or on both halves of a packed pair.
fn per_half(ft: FType, a: u64, b: u64, c: u64, f: impl Fn(Fmt, u64, u64, u64) -> u64) -> u64 {
    if ft.packed {
        let lo = f(ft.fmt, a & 0xffff, b & 0xffff, c & 0xffff);
        let hi = f(
            ft.fmt,
            (a >> 16) & 0xffff,
            (b >> 16) & 0xffff,
            (c >> 16) & 0xffff,
        );
        (hi << 16) | lo
    } else {
        f(ft.fmt, a, b, c)
    }
}

fn saturate(fmt: Fmt, v: u64, sat: bool) -> u64 {
    if !sat {
        return v;
    }
    let x = fmt.to_f64(v);
    if x.is_nan() || x <= 0.0 {
        fmt.round(0.0, 0.0, Rnd::Rn)
    } else if x >= 1.0 {
        fmt.round(1.0, 0.0, Rnd::Rn)
    } else {
        v
    }
}

fn input(fmt: Fmt, v: u64, ftz: bool) -> f64 {
    fmt.to_f64(if ftz { fmt.flush(v) } else { v })
}

fn output(fmt: Fmt, v: u64, m: FMods) -> u64 {
    let v = if m.ftz { fmt.flush(v) } else { v };
    saturate(fmt, v, m.sat)
}

pub(crate) fn float_bin(op: FloatOp, ft: FType, m: FMods, a: u64, b: u64) -> u64 {
    per_half(ft, a, b, 0, |fmt, a, b, _| {
        let x = input(fmt, a, m.ftz);
        let y = input(fmt, b, m.ftz);
        let r = match op {
            FloatOp::Add => {
                let (s, t) = two_sum(x, y);
                fmt.round(s, t, m.rnd)
            }
            FloatOp::Sub => {
                let (s, t) = two_sum(x, -y);
                fmt.round(s, t, m.rnd)
            }
            FloatOp::Mul => {
                let p = x * y;
                let t = if fmt == Fmt::F64 {
                    x.mul_add(y, -p)
                } else {
                    0.0
                };
                fmt.round(p, t, m.rnd)
            }
            FloatOp::Div => {
                let q = x / y;
                let t = if q.is_finite() && q != 0.0 {
                    -(q.mul_add(y, -x)) * y.signum()
                } else {
                    0.0
                };
                fmt.round(q, t, m.rnd)
            }
            // PTX min/max return the non-NaN operand when only one is NaN.
            FloatOp::Min => fmt.round(
                if x.is_nan() {
                    y
                } else if y.is_nan() {
                    x
                } else {
                    x.min(y)
                },
                0.0,
                Rnd::Rn,
            ),
            FloatOp::Max => fmt.round(
                if x.is_nan() {
                    y
                } else if y.is_nan() {
                    x
                } else {
                    x.max(y)
                },
                0.0,
                Rnd::Rn,
            ),
        };
        output(fmt, r, m)
    })
}

pub(crate) fn fma(ft: FType, m: FMods, a: u64, b: u64, c: u64) -> u64 {
    per_half(ft, a, b, c, |fmt, a, b, c| {
        let x = input(fmt, a, m.ftz);
        let y = input(fmt, b, m.ftz);
        let z = input(fmt, c, m.ftz);
        let r = if fmt == Fmt::F64 {
            let r = x.mul_add(y, z);
            // f64 fma is already correctly rounded to nearest; directed modes would need
            // the exact residual, which a double-double product gives.
            let p = x * y;
            let pe = x.mul_add(y, -p);
            let (s, t) = two_sum(p, z);
            let _ = s;
            fmt.round(r, t + pe - (r - s), m.rnd)
        } else {
            // x*y is exact in f64 for 24-bit (and narrower) significands.
            let (s, t) = two_sum(x * y, z);
            fmt.round(s, t, m.rnd)
        };
        output(fmt, r, m)
    })
}

pub(crate) fn float_un(op: FloatUnOp, ft: FType, m: FMods, a: u64) -> u64 {
    per_half(ft, a, 0, 0, |fmt, a, _, _| {
        let sign = 1u64 << (fmt.bits() - 1);
        match op {
            // Sign manipulation is exact bit work, NaN payload included.
            FloatUnOp::Neg => return output(fmt, a ^ sign, m),
            FloatUnOp::Abs => return output(fmt, a & !sign, m),
            _ => {}
        }
        let x = input(fmt, a, m.ftz);
        let (v, t) = match op {
            FloatUnOp::Ex2 => (x.exp2(), 0.0),
            FloatUnOp::Lg2 => (x.log2(), 0.0),
            FloatUnOp::Rcp => {
                let q = 1.0 / x;
                let t = if q.is_finite() && q != 0.0 {
                    -(q.mul_add(x, -1.0)) * x.signum()
                } else {
                    0.0
                };
                (q, t)
            }
            FloatUnOp::Rsqrt => (1.0 / x.sqrt(), 0.0),
            FloatUnOp::Sqrt => {
                let s = x.sqrt();
                let t = if s.is_finite() && s > 0.0 {
                    -(s.mul_add(s, -x))
                } else {
                    0.0
                };
                (s, t)
            }
            FloatUnOp::Sin => (x.sin(), 0.0),
            FloatUnOp::Cos => (x.cos(), 0.0),
            FloatUnOp::Tanh => (x.tanh(), 0.0),
            FloatUnOp::Neg | FloatUnOp::Abs => unreachable!("handled above"),
        };
        output(fmt, fmt.round(v, t, m.rnd), m)
    })
}

pub(crate) fn setp(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if let Some(fmt) = ty.float_fmt() {
        let x = fmt.to_f64(a);
        let y = fmt.to_f64(b);
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !unordered && x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt | Cmp::Lo => !unordered && x < y,
            Cmp::Le | Cmp::Ls => !unordered && x <= y,
            Cmp::Gt | Cmp::Hi => !unordered && x > y,
            Cmp::Ge | Cmp::Hs => !unordered && x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => unordered || x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
        };
    }
    // lo/ls/hi/hs are the unsigned comparisons; plain lt/… follow the type's signedness.
    let (x, y) = match cmp {
        Cmp::Lo | Cmp::Ls | Cmp::Hi | Cmp::Hs => {
            let m = mask(ty.bits());
            ((a & m) as i128, (b & m) as i128)
        }
        _ => (ty.int_value(a), ty.int_value(b)),
    };
    match cmp {
        Cmp::Eq | Cmp::Equ => x == y,
        Cmp::Ne | Cmp::Neu => x != y,
        Cmp::Lt | Cmp::Lo | Cmp::Ltu => x < y,
        Cmp::Le | Cmp::Ls | Cmp::Leu => x <= y,
        Cmp::Gt | Cmp::Hi | Cmp::Gtu => x > y,
        Cmp::Ge | Cmp::Hs | Cmp::Geu => x >= y,
        Cmp::Num => true,
        Cmp::Nan => false,
    }
}

pub(crate) fn combine(op: BoolOp, a: bool, b: bool) -> bool {
    match op {
        BoolOp::And => a && b,
        BoolOp::Or => a || b,
        BoolOp::Xor => a ^ b,
    }
}

/// `cvt` between any two scalar types.
pub(crate) fn cvt(
    dst: Ty,
    src: Ty,
    rnd: Rnd,
    irnd: Option<IntRnd>,
    sat: bool,
    ftz: bool,
    a: u64,
) -> u64 {
    match (src.float_fmt(), dst.float_fmt()) {
        (Some(sf), Some(df)) => {
            let x = input(sf, a, ftz);
            let v = match irnd {
                Some(ir) => df.round(ir.apply(x), 0.0, Rnd::Rn),
                None => df.round(x, 0.0, rnd),
            };
            output(df, v, FMods { rnd, ftz, sat })
        }
        (Some(sf), None) => {
            let x = input(sf, a, ftz);
            if x.is_nan() {
                return 0;
            }
            let r = irnd.unwrap_or(IntRnd::Rzi).apply(x);
            let bits = dst.bits();
            // Float-to-integer conversions saturate to the destination range.
            let (lo, hi) = if dst.is_signed() {
                (
                    -(2f64.powi(bits as i32 - 1)),
                    2f64.powi(bits as i32 - 1) - 1.0,
                )
            } else {
                (0.0, 2f64.powi(bits as i32) - 1.0)
            };
            let c = r.clamp(lo, hi);
            dst.normalize(c as i128 as u64)
        }
        (None, Some(df)) => {
            let v = src.int_value(a);
            output(df, df.round_int(v, rnd), FMods { rnd, ftz, sat })
        }
        (None, None) => {
            let v = src.int_value(a);
            if sat {
                let bits = dst.bits();
                let (lo, hi) = if dst.is_signed() {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                dst.normalize(v.clamp(lo, hi) as u64)
            } else {
                dst.normalize(v as u64)
            }
        }
    }
}

/// `lop3`: bit i of the result is bit `(a_i << 2) | (b_i << 1) | c_i` of the table (the
/// table of `F` is `F(0xF0, 0xCC, 0xAA)`).
pub(crate) fn lop3(a: u64, b: u64, c: u64, lut: u8) -> u64 {
    let mut r = 0u32;
    for i in 0..32 {
        let idx = (((a >> i) & 1) << 2) | (((b >> i) & 1) << 1) | ((c >> i) & 1);
        r |= (((lut >> idx) & 1) as u32) << i;
    }
    r as u64
}

/// `bfe` per the ISA: `len` bits from `pos`, filled above with the sign bit (signed) or 0.
pub(crate) fn bfe(ty: Ty, a: u64, pos: u64, len: u64) -> u64 {
    let msb = ty.bits() - 1;
    let pos = (pos & 0xff) as u32;
    let len = (len & 0xff) as u32;
    let sbit = if ty.is_signed() && len > 0 {
        (a >> (pos + len - 1).min(msb)) & 1
    } else {
        0
    };
    let mut d = 0u64;
    for i in 0..=msb {
        let bit = if i < len && pos + i <= msb {
            (a >> (pos + i)) & 1
        } else {
            sbit
        };
        d |= bit << i;
    }
    ty.normalize(d)
}

/// `bfi` per the ISA: the low `len` bits of `f` replace bits `pos..` of `base`.
pub(crate) fn bfi(ty: Ty, f: u64, base: u64, pos: u64, len: u64) -> u64 {
    let msb = ty.bits() - 1;
    let pos = (pos & 0xff) as u32;
    let len = (len & 0xff) as u32;
    let mut d = base;
    let mut i = 0;
    while i < len && pos + i <= msb {
        d = (d & !(1u64 << (pos + i))) | (((f >> i) & 1) << (pos + i));
        i += 1;
    }
    ty.normalize(d)
}

/// `prmt.b32` default mode: result byte i is byte `c[4i+2:4i]` of `{b, a}`, or that byte's
/// sign replicated when `c[4i+3]` is set.
pub(crate) fn prmt(a: u64, b: u64, c: u64) -> u64 {
    let bytes = ((b & 0xffff_ffff) << 32) | (a & 0xffff_ffff);
    let mut r = 0u64;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = (bytes >> (8 * (sel & 7))) & 0xff;
        let byte = if sel & 8 != 0 {
            if byte & 0x80 != 0 { 0xff } else { 0 }
        } else {
            byte
        };
        r |= byte << (8 * i);
    }
    r
}
