//! Arithmetic, comparison, selection and conversion instructions.

use super::KernelBuilder;
use crate::dsl::ops::{BinOp, MulMode, Op, UnOp};
use crate::dsl::types::{Cmp, Operand, Precision, Reg, Rounding, Ty};

impl KernelBuilder {
    fn bin(&mut self, op: BinOp, a: Operand, b: Operand) -> Reg {
        let ty = self.infer(op.name(), &[a, b]);
        self.bin_into(op, ty, a, b)
    }

    fn bin_into(&mut self, op: BinOp, ty: Ty, a: Operand, b: Operand) -> Reg {
        let name = op.name();
        let shift = matches!(op, BinOp::Shl | BinOp::Shr);
        self.check(name, a, ty);
        self.check(name, b, if shift { Ty::U32 } else { ty });
        let legal = match op {
            BinOp::Add | BinOp::Sub | BinOp::Min | BinOp::Max => ty != Ty::Pred,
            BinOp::Mul => ty.is_float(),
            BinOp::Div => ty.is_int() || ty == Ty::F32,
            BinOp::Rem | BinOp::Shl | BinOp::Shr => ty.is_int(),
            BinOp::And | BinOp::Or | BinOp::Xor => ty.is_int() || ty == Ty::Pred,
        };
        if !legal {
            self.fail(format!("{name} is not defined on {}", ty.suffix()));
        }
        let rnd = (ty.is_float()
            && matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div))
        .then_some(Rounding::Rn);
        let dst = self.reg(ty);
        self.push(Op::Bin {
            op,
            ty,
            rnd,
            dst,
            a,
            b,
        });
        dst
    }

    /// a + b (floats round to nearest, never contracted into an fma by ptxas).
    pub fn add(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Add, a.into(), b.into())
    }
    /// a − b.
    pub fn sub(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Sub, a.into(), b.into())
    }
    /// a · b for floats (use [`Self::mul_lo`] / [`Self::mul_wide`] for integers).
    pub fn mul(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Mul, a.into(), b.into())
    }
    /// a / b (integers truncate; f32 rounds to nearest).
    pub fn div(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Div, a.into(), b.into())
    }
    /// a mod b (integers).
    pub fn rem(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Rem, a.into(), b.into())
    }
    /// min(a, b).
    pub fn min(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Min, a.into(), b.into())
    }
    /// max(a, b).
    pub fn max(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Max, a.into(), b.into())
    }
    /// a & b.
    pub fn and(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::And, a.into(), b.into())
    }
    /// a | b.
    pub fn or(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Or, a.into(), b.into())
    }
    /// a ^ b.
    pub fn xor(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.bin(BinOp::Xor, a.into(), b.into())
    }
    /// a << b.
    pub fn shl(&mut self, a: Reg, b: impl Into<Operand>) -> Reg {
        self.bin_into(BinOp::Shl, a.ty, a.into(), b.into())
    }
    /// a >> b (arithmetic for `.s32`).
    pub fn shr(&mut self, a: Reg, b: impl Into<Operand>) -> Reg {
        self.bin_into(BinOp::Shr, a.ty, a.into(), b.into())
    }

    fn int_mul(&mut self, mode: MulMode, a: Operand, b: Operand, c: Option<Operand>) -> Reg {
        let ty = self.infer("mul", &[a, b]);
        self.check("mul", a, ty);
        self.check("mul", b, ty);
        let dst_ty = match (mode, ty) {
            (MulMode::Wide, Ty::U32) => Ty::U64,
            (MulMode::Wide, _) => {
                self.fail(format!(
                    "mul.wide is only emitted for .u32, got {}",
                    ty.suffix()
                ));
                ty
            }
            (_, t) if t.is_int() => t,
            (_, t) => {
                self.fail(format!("integer mul on {}", t.suffix()));
                t
            }
        };
        let dst = self.reg(dst_ty);
        match c {
            None => self.push(Op::IntMul {
                mode,
                ty,
                dst,
                a,
                b,
            }),
            Some(c) => {
                self.check("mad", c, dst_ty);
                self.push(Op::IntMad {
                    mode,
                    ty,
                    dst,
                    a,
                    b,
                    c,
                });
            }
        }
        dst
    }

    /// Low half of an integer product.
    pub fn mul_lo(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.int_mul(MulMode::Lo, a.into(), b.into(), None)
    }
    /// High half of an integer product.
    pub fn mul_hi(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.int_mul(MulMode::Hi, a.into(), b.into(), None)
    }
    /// Full `.u32 × .u32 → .u64` product (byte offsets).
    pub fn mul_wide(&mut self, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        self.int_mul(MulMode::Wide, a.into(), b.into(), None)
    }
    /// a·b + c, low half.
    pub fn mad_lo(
        &mut self,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) -> Reg {
        self.int_mul(MulMode::Lo, a.into(), b.into(), Some(c.into()))
    }
    /// a·b + c with a `.u32 × .u32 → .u64` product.
    pub fn mad_wide(
        &mut self,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) -> Reg {
        self.int_mul(MulMode::Wide, a.into(), b.into(), Some(c.into()))
    }

    /// a·b + c rounded once to nearest.
    pub fn fma(
        &mut self,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) -> Reg {
        let (a, b, c) = (a.into(), b.into(), c.into());
        let ty = self.infer("fma", &[a, b, c]);
        let dst = self.reg(ty);
        self.fma_into(dst, a, b, c);
        dst
    }

    /// `dst = a·b + c` into an existing register (accumulators).
    pub fn fma_into(
        &mut self,
        dst: Reg,
        a: impl Into<Operand>,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
    ) {
        let (a, b, c) = (a.into(), b.into(), c.into());
        let ty = dst.ty;
        for o in [a, b, c] {
            self.check("fma", o, ty);
        }
        if !ty.is_float() {
            self.fail(format!("fma on {}", ty.suffix()));
        }
        self.push(Op::Fma {
            rnd: Rounding::Rn,
            ty,
            dst,
            a,
            b,
            c,
        });
    }

    fn un(&mut self, op: UnOp, a: Operand, allowed: fn(Ty) -> bool, name: &str) -> Reg {
        let ty = self.infer(name, &[a]);
        self.check(name, a, ty);
        if !allowed(ty) {
            self.fail(format!("{name} is not defined on {}", ty.suffix()));
        }
        let dst = self.reg(ty);
        self.push(Op::Un { op, ty, dst, a });
        dst
    }

    /// −a.
    pub fn neg(&mut self, a: impl Into<Operand>) -> Reg {
        self.un(
            UnOp::Neg,
            a.into(),
            |t| {
                matches!(
                    t,
                    Ty::S32 | Ty::F32 | Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2
                )
            },
            "neg",
        )
    }
    /// |a|.
    pub fn abs(&mut self, a: impl Into<Operand>) -> Reg {
        self.un(
            UnOp::Abs,
            a.into(),
            |t| {
                matches!(
                    t,
                    Ty::S32 | Ty::F32 | Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2
                )
            },
            "abs",
        )
    }
    /// Bitwise (or logical) not.
    pub fn not(&mut self, a: impl Into<Operand>) -> Reg {
        self.un(UnOp::Not, a.into(), |t| t.is_int() || t == Ty::Pred, "not")
    }
    /// 2^a, approximate (`ex2.approx.f32`, optionally `.ftz`).
    pub fn ex2(&mut self, a: impl Into<Operand>, ftz: bool) -> Reg {
        self.un(UnOp::Ex2 { ftz }, a.into(), |t| t == Ty::F32, "ex2")
    }
    /// log2 a, approximate.
    pub fn lg2(&mut self, a: impl Into<Operand>, ftz: bool) -> Reg {
        self.un(UnOp::Lg2 { ftz }, a.into(), |t| t == Ty::F32, "lg2")
    }
    /// 1/a.
    pub fn rcp(&mut self, a: impl Into<Operand>, precision: Precision) -> Reg {
        self.un(UnOp::Rcp(precision), a.into(), |t| t == Ty::F32, "rcp")
    }
    /// 1/√a, approximate.
    pub fn rsqrt(&mut self, a: impl Into<Operand>, ftz: bool) -> Reg {
        self.un(UnOp::Rsqrt { ftz }, a.into(), |t| t == Ty::F32, "rsqrt")
    }
    /// √a.
    pub fn sqrt(&mut self, a: impl Into<Operand>, precision: Precision) -> Reg {
        self.un(UnOp::Sqrt(precision), a.into(), |t| t == Ty::F32, "sqrt")
    }

    /// A predicate: `a cmp b`.
    pub fn setp(&mut self, cmp: Cmp, a: impl Into<Operand>, b: impl Into<Operand>) -> Reg {
        let (a, b) = (a.into(), b.into());
        let ty = self.infer("setp", &[a, b]);
        self.check("setp", a, ty);
        self.check("setp", b, ty);
        if ty == Ty::Pred || ty.packed().is_none() && ty.unpacked().is_some() {
            self.fail(format!("setp on {}", ty.suffix()));
        }
        let dst = self.reg(Ty::Pred);
        self.push(Op::Setp { cmp, ty, dst, a, b });
        dst
    }

    /// `p ? a : b`.
    pub fn selp(&mut self, a: impl Into<Operand>, b: impl Into<Operand>, p: Reg) -> Reg {
        let (a, b) = (a.into(), b.into());
        let ty = self.infer("selp", &[a, b]);
        self.check("selp", a, ty);
        self.check("selp", b, ty);
        if p.ty != Ty::Pred || !matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::F32) {
            self.fail(format!(
                "selp on {} with selector {}",
                ty.suffix(),
                p.ty.suffix()
            ));
        }
        let dst = self.reg(ty);
        self.push(Op::Selp { ty, dst, a, b, p });
        dst
    }

    // ---- conversions ----

    /// Convert `src` to `to`. `rnd` must be given exactly where PTX requires a rounding mode
    /// (narrowing float→float, float→int, int→float) and omitted where the result is exact.
    pub fn cvt(&mut self, to: Ty, src: Reg, rnd: Option<Rounding>) -> Reg {
        self.cvt_sat(to, src, rnd, false)
    }

    /// As [`Self::cvt`], clamping to an integer destination's range (`.sat`).
    pub fn cvt_sat(&mut self, to: Ty, src: Reg, rnd: Option<Rounding>, sat: bool) -> Reg {
        let from = src.ty;
        let scalar = |t: Ty| {
            matches!(
                t,
                Ty::U32 | Ty::S32 | Ty::U64 | Ty::F16 | Ty::Bf16 | Ty::F32
            )
        };
        if !scalar(from) || !scalar(to) {
            self.fail(format!(
                "cvt{}{}: not a scalar conversion",
                to.suffix(),
                from.suffix()
            ));
        }
        let needs = match (from.is_float(), to.is_float()) {
            (true, true) => {
                to.bits() < from.bits() || (from.bits() == 16 && to.bits() == 16 && from != to)
            }
            (true, false) | (false, true) => true,
            (false, false) => false,
        };
        if needs != rnd.is_some() {
            self.fail(format!(
                "cvt{}{}: rounding {} here",
                to.suffix(),
                from.suffix(),
                if needs {
                    "is required"
                } else {
                    "is not allowed"
                }
            ));
        }
        if sat && !to.is_int() {
            self.fail(format!(
                "cvt.sat{}: saturation is only emitted for integer results",
                to.suffix()
            ));
        }
        let dst = self.reg(to);
        self.push(Op::Cvt { dst, src, rnd, sat });
        dst
    }

    /// Round two f32 into one packed f16x2/bf16x2 (`hi` to the upper half).
    pub fn cvt_pack(&mut self, to: Ty, hi: impl Into<Operand>, lo: impl Into<Operand>) -> Reg {
        let (hi, lo) = (hi.into(), lo.into());
        self.check("cvt pack", hi, Ty::F32);
        self.check("cvt pack", lo, Ty::F32);
        if to.unpacked().is_none() {
            self.fail(format!("cvt pack into {}", to.suffix()));
        }
        let dst = self.reg(to);
        self.push(Op::CvtPack { dst, hi, lo });
        dst
    }

    /// Two 16-bit floats into one packed register (`lo` in the low half).
    pub fn pack(&mut self, lo: Reg, hi: Reg) -> Reg {
        let Some(ty) = lo.ty.packed() else {
            self.fail(format!("pack of {}", lo.ty.suffix()));
            return lo;
        };
        if hi.ty != lo.ty {
            self.fail("pack of two different types".into());
        }
        let dst = self.reg(ty);
        self.push(Op::Pack { dst, lo, hi });
        dst
    }

    /// A packed register into (low, high).
    pub fn unpack(&mut self, src: Reg) -> (Reg, Reg) {
        let Some(ty) = src.ty.unpacked() else {
            self.fail(format!("unpack of {}", src.ty.suffix()));
            return (src, src);
        };
        let (lo, hi) = (self.reg(ty), self.reg(ty));
        self.push(Op::Unpack { lo, hi, src });
        (lo, hi)
    }

    /// A packed 16-bit pair into its (low, high) halves widened to f32.
    pub fn unpack_f32(&mut self, src: Reg) -> (Reg, Reg) {
        let (lo, hi) = self.unpack(src);
        (self.cvt(Ty::F32, lo, None), self.cvt(Ty::F32, hi, None))
    }
}
