//! Opcode decoding: one `RawInstr` into one [`Op`]. Every modifier must be understood or
//! explicitly ignorable (cache and scope hints); anything else is an `Unsupported` error.

use super::Scope;
use super::ops::{
    BoolOp, Class, Cmp, FMods, FType, FloatOp, FloatUnOp, Instr, IntOp, IntUnOp, MadMode, Op, Reg,
    Space, Src,
};
use crate::EmuError;
use crate::parse::{Imm, Operand, RawInstr};
use crate::types::{Fmt, IntRnd, Ty};

use super::memory_ops::{decode_atom, decode_cp_async, decode_ldst, space_of};
use super::operands::{Mods, Ops};
use super::warp_ops::{decode_ldmatrix, decode_mma, decode_shfl, decode_vote};

fn ftype(ty: Ty) -> Option<FType> {
    let (fmt, packed) = match ty {
        Ty::F16 => (Fmt::F16, false),
        Ty::Bf16 => (Fmt::Bf16, false),
        Ty::F32 => (Fmt::F32, false),
        Ty::F64 => (Fmt::F64, false),
        Ty::F16x2 => (Fmt::F16, true),
        Ty::Bf16x2 => (Fmt::Bf16, true),
        _ => return None,
    };
    Some(FType { fmt, packed })
}

fn float_class(ft: FType) -> Class {
    match ft.fmt {
        Fmt::F32 => Class::Fp32,
        Fmt::F64 => Class::Fp64,
        Fmt::F16 | Fmt::Bf16 => Class::Fp16,
    }
}

fn cmp_of(s: &str) -> Option<Cmp> {
    Some(match s {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

/// Decodes one instruction.
pub(super) fn decode(scope: &Scope, ri: &RawInstr) -> Result<Instr, EmuError> {
    let o = Ops { ri, scope };
    let guard = match &ri.guard {
        Some((p, neg)) => Some((o.reg_named(p)?, *neg)),
        None => None,
    };
    let (base, mut m) = Mods::new(ri);
    let (op, class) = match base.as_str() {
        "mov" => decode_mov(&o, &mut m)?,
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl"
        | "shr" => decode_binary(&o, &mut m, &base)?,
        "mad" | "fma" => decode_mad(&o, &mut m, &base)?,
        "lop3" => {
            if m.one_type()? != Ty::B32 {
                return Err(o.err("lop3 is .b32"));
            }
            o.count(5)?;
            let lut = match o.op(4)? {
                Operand::Imm(Imm::Int(v)) if *v <= 0xff => *v as u8,
                _ => return Err(o.err("lop3 needs an 8-bit immediate truth table")),
            };
            let op = Op::Lop3 {
                d: o.reg(0)?,
                a: o.src(1, Ty::B32)?,
                b: o.src(2, Ty::B32)?,
                c: o.src(3, Ty::B32)?,
                lut,
            };
            (op, Class::Int)
        }
        "bfe" => {
            let ty = m.one_type()?;
            if !matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::S64) {
                return Err(o.err("bfe needs .u32/.s32/.u64/.s64"));
            }
            o.count(4)?;
            let op = Op::Bfe {
                ty,
                d: o.reg(0)?,
                a: o.src(1, ty)?,
                pos: o.src(2, Ty::U32)?,
                len: o.src(3, Ty::U32)?,
            };
            (op, Class::Int)
        }
        "bfi" => {
            let ty = m.one_type()?;
            if !matches!(ty, Ty::B32 | Ty::B64) {
                return Err(o.err("bfi needs .b32/.b64"));
            }
            o.count(5)?;
            let op = Op::Bfi {
                ty,
                d: o.reg(0)?,
                f: o.src(1, ty)?,
                base: o.src(2, ty)?,
                pos: o.src(3, Ty::U32)?,
                len: o.src(4, Ty::U32)?,
            };
            (op, Class::Int)
        }
        "prmt" => {
            if m.one_type()? != Ty::B32 {
                return Err(o.err("prmt is .b32 (only the default mode is supported)"));
            }
            o.count(4)?;
            let op = Op::Prmt {
                d: o.reg(0)?,
                a: o.src(1, Ty::B32)?,
                b: o.src(2, Ty::B32)?,
                c: o.src(3, Ty::B32)?,
            };
            (op, Class::Int)
        }
        "abs" | "neg" | "not" | "cnot" | "popc" | "clz" | "brev" => {
            decode_unary(&o, &mut m, &base)?
        }
        "ex2" | "lg2" | "rcp" | "rsqrt" | "sqrt" | "sin" | "cos" | "tanh" => {
            decode_sfu(&o, &mut m, &base)?
        }
        "setp" => decode_setp(&o, &mut m)?,
        "selp" => {
            let ty = m.one_type()?;
            o.count(4)?;
            let op = Op::Selp {
                ty,
                d: o.reg(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                p: o.src(3, Ty::Pred)?,
            };
            (op, Class::Int)
        }
        "cvt" => decode_cvt(&o, &mut m)?,
        "cvta" => {
            let to_generic = !m.take("to");
            let space = space_of(&mut m);
            let ty = m.one_type()?;
            if space == Space::Generic || space == Space::Param || !matches!(ty, Ty::U32 | Ty::U64)
            {
                return Err(o.err("cvta needs .global/.shared/.local and .u32/.u64"));
            }
            o.count(2)?;
            (
                Op::Cvta {
                    to_generic,
                    space,
                    d: o.reg(0)?,
                    a: o.src(1, ty)?,
                },
                Class::Int,
            )
        }
        "ld" | "ldu" | "st" => decode_ldst(&o, &mut m, &base)?,
        "bra" => {
            m.take("uni");
            o.count(1)?;
            (
                Op::Bra {
                    target: o.label(0)?,
                },
                Class::Control,
            )
        }
        "ret" | "exit" => {
            o.count(0)?;
            (Op::Exit, Class::Control)
        }
        "bar" | "barrier" => {
            m.take("cta");
            if !m.take("sync") {
                return Err(o.err("only bar.sync / barrier.sync are supported"));
            }
            m.take("aligned");
            let (id, count) = match ri.operands.len() {
                0 if base == "barrier" => (Src::Imm(0), None),
                1 => (o.src(0, Ty::U32)?, None),
                2 => (o.src(0, Ty::U32)?, Some(o.src(1, Ty::U32)?)),
                _ => return Err(o.err("bar.sync takes a barrier id and an optional count")),
            };
            (Op::Bar { id, count }, Class::Barrier)
        }
        "membar" => {
            m.take_one(&["cta", "gl", "sys"]);
            o.count(0)?;
            (Op::Fence, Class::Barrier)
        }
        "fence" => {
            m.take_one(&["sc", "acq_rel"]);
            m.take("proxy");
            m.take("async");
            m.ignore(&["cta", "gpu", "sys", "shared", "global"]);
            o.count(0)?;
            (Op::Fence, Class::Barrier)
        }
        "shfl" => decode_shfl(&o, &mut m)?,
        "vote" => decode_vote(&o, &mut m)?,
        "activemask" => {
            if m.one_type()? != Ty::B32 {
                return Err(o.err("activemask is .b32"));
            }
            o.count(1)?;
            (Op::ActiveMask { d: o.reg(0)? }, Class::Shfl)
        }
        "mma" => decode_mma(&o, &mut m)?,
        "ldmatrix" => decode_ldmatrix(&o, &mut m)?,
        "cp" => decode_cp_async(&o, &mut m)?,
        "atom" | "red" => decode_atom(&o, &mut m, &base)?,
        _ => return Err(o.err(format!("instruction `{base}` is not supported"))),
    };
    m.finish()?;
    let (reads, writes) = operand_regs(&o, ri);
    let global_load = class == Class::LdGlobal && matches!(op, Op::Ld { .. });
    let loads = if global_load {
        writes.clone()
    } else {
        Box::new([])
    };
    Ok(Instr {
        op,
        guard,
        class,
        reads,
        loads,
        writes,
    })
}

/// The registers `ri` reads and writes: operand 0 is the destination except the address of
/// a store; every other register name, vector element and address base is read. Special
/// registers and labels are skipped. For the time model only: execution uses the `Op`.
fn operand_regs(o: &Ops<'_, '_>, ri: &RawInstr) -> (Box<[Reg]>, Box<[Reg]>) {
    fn names<'a>(x: &'a Operand, out: &mut Vec<&'a str>) {
        match x {
            Operand::Name(n) | Operand::NotName(n) => out.push(n),
            Operand::Vector(v) => v.iter().for_each(|e| names(e, out)),
            Operand::Addr { base: Some(b), .. } => out.push(b),
            Operand::Pair(a, b) => {
                out.push(a);
                out.push(b);
            }
            Operand::Addr { base: None, .. } | Operand::Imm(_) => {}
        }
    }
    let regs = |xs: Vec<&str>| -> Box<[Reg]> {
        xs.into_iter().filter_map(|n| o.reg_named(n).ok()).collect()
    };
    let mut read = Vec::new();
    let mut written = Vec::new();
    for (i, x) in ri.operands.iter().enumerate() {
        if i == 0 && !matches!(x, Operand::Addr { .. }) {
            names(x, &mut written);
        } else {
            names(x, &mut read);
        }
    }
    (regs(read), regs(written))
}

fn decode_mov(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    let ty = m.one_type()?;
    o.count(2)?;
    let op = match (o.op(0)?, o.op(1)?) {
        (Operand::Vector(ds), _) => {
            let part_bits = ty.bits() / ds.len() as u32;
            if ![8, 16, 32].contains(&part_bits) || part_bits * ds.len() as u32 != ty.bits() {
                return Err(o.err("unsupported unpack width"));
            }
            let mut regs = Vec::new();
            for d in ds {
                match d {
                    Operand::Name(n) => regs.push(o.reg_named(n)?),
                    other => return Err(o.err(format!("cannot unpack into {other:?}"))),
                }
            }
            Op::Unpack {
                part_bits,
                ds: regs,
                a: o.src(1, ty)?,
            }
        }
        (_, Operand::Vector(parts)) => {
            let part_bits = ty.bits() / parts.len() as u32;
            let part_ty = match part_bits {
                8 => Ty::B8,
                16 => Ty::B16,
                32 => Ty::B32,
                _ => return Err(o.err("unsupported pack width")),
            };
            if part_bits * parts.len() as u32 != ty.bits() {
                return Err(o.err("unsupported pack width"));
            }
            let parts = parts
                .iter()
                .map(|p| o.src_of(p, part_ty))
                .collect::<Result<Vec<_>, _>>()?;
            Op::Pack {
                part_bits,
                d: o.reg(0)?,
                parts,
            }
        }
        _ => Op::Mov {
            ty,
            d: o.reg(0)?,
            a: o.src(1, ty)?,
        },
    };
    Ok((op, Class::Int))
}

fn fmods(m: &mut Mods) -> FMods {
    let rnd = m.rnd();
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    FMods { rnd, ftz, sat }
}

fn decode_binary(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let ty = m.one_type()?;
    o.count(3)?;
    if let Some(ft) = ftype(ty) {
        m.ignore(&["approx", "full"]); // div.approx/div.full: computed correctly rounded
        let fm = fmods(m);
        let op = match base {
            "add" => FloatOp::Add,
            "sub" => FloatOp::Sub,
            "mul" => FloatOp::Mul,
            "div" => FloatOp::Div,
            "min" => FloatOp::Min,
            "max" => FloatOp::Max,
            _ => return Err(o.err(format!("`{base}` has no float form"))),
        };
        let class = if op == FloatOp::Div && ft.fmt == Fmt::F32 {
            Class::Sfu
        } else {
            float_class(ft)
        };
        return Ok((
            Op::Float {
                op,
                ft,
                m: fm,
                d: o.reg(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
            },
            class,
        ));
    }
    let sat = m.take("sat");
    let op = match base {
        "add" if sat => IntOp::AddSat,
        "sub" if sat => IntOp::SubSat,
        "add" => IntOp::Add,
        "sub" => IntOp::Sub,
        "mul" => match m.take_one(&["lo", "hi", "wide"]) {
            Some("lo") => IntOp::MulLo,
            Some("hi") => IntOp::MulHi,
            Some("wide") => IntOp::MulWide,
            _ => return Err(o.err("integer mul needs .lo, .hi or .wide")),
        },
        "div" => IntOp::Div,
        "rem" => IntOp::Rem,
        "min" => IntOp::Min,
        "max" => IntOp::Max,
        "and" => IntOp::And,
        "or" => IntOp::Or,
        "xor" => IntOp::Xor,
        "shl" => IntOp::Shl,
        "shr" => IntOp::Shr,
        _ => return Err(o.err(format!("`{base}` has no integer form"))),
    };
    if sat && ty != Ty::S32 {
        return Err(o.err(".sat is only defined for .s32"));
    }
    let bty = if matches!(op, IntOp::Shl | IntOp::Shr) {
        Ty::U32
    } else {
        ty
    };
    Ok((
        Op::Int {
            op,
            ty,
            d: o.reg(0)?,
            a: o.src(1, ty)?,
            b: o.src(2, bty)?,
        },
        Class::Int,
    ))
}

fn decode_mad(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let ty = m.one_type()?;
    o.count(4)?;
    if let Some(ft) = ftype(ty) {
        let fm = fmods(m);
        return Ok((
            Op::Fma {
                ft,
                m: fm,
                d: o.reg(0)?,
                a: o.src(1, ty)?,
                b: o.src(2, ty)?,
                c: o.src(3, ty)?,
            },
            float_class(ft),
        ));
    }
    if base == "fma" {
        return Err(o.err("fma needs a float type"));
    }
    let mode = match m.take_one(&["lo", "hi", "wide"]) {
        Some("lo") => MadMode::Lo,
        Some("hi") => MadMode::Hi,
        Some("wide") => MadMode::Wide,
        _ => return Err(o.err("integer mad needs .lo, .hi or .wide")),
    };
    let cty = if mode == MadMode::Wide {
        if ty.is_signed() { Ty::S64 } else { Ty::U64 }
    } else {
        ty
    };
    Ok((
        Op::Mad {
            mode,
            ty,
            d: o.reg(0)?,
            a: o.src(1, ty)?,
            b: o.src(2, ty)?,
            c: o.src(3, cty)?,
        },
        Class::Int,
    ))
}

fn decode_unary(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let ty = m.one_type()?;
    o.count(2)?;
    if let Some(ft) = ftype(ty) {
        let fm = fmods(m);
        let op = match base {
            "abs" => FloatUnOp::Abs,
            "neg" => FloatUnOp::Neg,
            _ => return Err(o.err(format!("`{base}` has no float form"))),
        };
        return Ok((
            Op::FloatUn {
                op,
                ft,
                m: fm,
                d: o.reg(0)?,
                a: o.src(1, ty)?,
            },
            float_class(ft),
        ));
    }
    let op = match base {
        "abs" => IntUnOp::Abs,
        "neg" => IntUnOp::Neg,
        "not" => IntUnOp::Not,
        "cnot" => IntUnOp::Cnot,
        "popc" => IntUnOp::Popc,
        "clz" => IntUnOp::Clz,
        _ => IntUnOp::Brev,
    };
    Ok((
        Op::IntUn {
            op,
            ty,
            d: o.reg(0)?,
            a: o.src(1, ty)?,
        },
        Class::Int,
    ))
}

fn decode_sfu(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let ty = m.one_type()?;
    o.count(2)?;
    m.take("approx"); // computed correctly rounded from an f64 evaluation
    m.take("full");
    let ft = ftype(ty).ok_or_else(|| o.err(format!("`{base}` needs a float type")))?;
    let fm = fmods(m);
    let op = match base {
        "ex2" => FloatUnOp::Ex2,
        "lg2" => FloatUnOp::Lg2,
        "rcp" => FloatUnOp::Rcp,
        "rsqrt" => FloatUnOp::Rsqrt,
        "sqrt" => FloatUnOp::Sqrt,
        "sin" => FloatUnOp::Sin,
        "cos" => FloatUnOp::Cos,
        _ => FloatUnOp::Tanh,
    };
    Ok((
        Op::FloatUn {
            op,
            ft,
            m: fm,
            d: o.reg(0)?,
            a: o.src(1, ty)?,
        },
        Class::Sfu,
    ))
}

fn decode_setp(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    let cmp = m
        .parts
        .iter()
        .position(|p| cmp_of(p).is_some())
        .map(|i| m.parts.remove(i))
        .and_then(|s| cmp_of(&s))
        .ok_or_else(|| o.err("setp needs a comparison"))?;
    let bool_op = match m.take_one(&["and", "or", "xor"]) {
        Some("and") => Some(BoolOp::And),
        Some("or") => Some(BoolOp::Or),
        Some("xor") => Some(BoolOp::Xor),
        _ => None,
    };
    m.take("ftz");
    let ty = m.one_type()?;
    if matches!(ty, Ty::F16x2 | Ty::Bf16x2) {
        return Err(o.err("packed setp is not supported"));
    }
    let (d, d2) = match o.op(0)? {
        Operand::Pair(p, q) => (o.reg_named(p)?, Some(o.reg_named(q)?)),
        Operand::Name(p) => (o.reg_named(p)?, None),
        other => return Err(o.err(format!("setp destination {other:?}"))),
    };
    let comb = match bool_op {
        None => {
            o.count(3)?;
            None
        }
        Some(bo) => {
            o.count(4)?;
            match o.op(3)? {
                Operand::NotName(n) => Some((bo, Src::Reg(o.reg_named(n)?), true)),
                _ => Some((bo, o.src(3, Ty::Pred)?, false)),
            }
        }
    };
    Ok((
        Op::Setp {
            cmp,
            ty,
            d,
            d2,
            a: o.src(1, ty)?,
            b: o.src(2, ty)?,
            comb,
        },
        if ty.is_float() {
            Class::Fp32
        } else {
            Class::Int
        },
    ))
}

fn decode_cvt(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    let irnd = match m.take_one(&["rni", "rzi", "rmi", "rpi"]) {
        Some("rni") => Some(IntRnd::Rni),
        Some("rzi") => Some(IntRnd::Rzi),
        Some("rmi") => Some(IntRnd::Rmi),
        Some("rpi") => Some(IntRnd::Rpi),
        _ => None,
    };
    let rnd = m.rnd();
    let ftz = m.take("ftz");
    let sat = m.take("sat");
    let tys = m.types();
    if tys.len() != 2 {
        return Err(o.err("cvt needs a destination and a source type"));
    }
    let (dst, src) = (tys[0], tys[1]);
    let class = if dst.is_float() || src.is_float() {
        Class::Fp32
    } else {
        Class::Int
    };
    if matches!(dst, Ty::F16x2 | Ty::Bf16x2) {
        if src != Ty::F32 {
            return Err(o.err("packed cvt needs an .f32 source"));
        }
        o.count(3)?;
        let fmt = if dst == Ty::F16x2 {
            Fmt::F16
        } else {
            Fmt::Bf16
        };
        return Ok((
            Op::CvtPack {
                fmt,
                rnd,
                sat,
                d: o.reg(0)?,
                a: o.src(1, src)?,
                b: o.src(2, src)?,
            },
            class,
        ));
    }
    if matches!(src, Ty::F16x2 | Ty::Bf16x2 | Ty::Pred) || dst == Ty::Pred {
        return Err(o.err("cvt between these types is not supported"));
    }
    o.count(2)?;
    Ok((
        Op::Cvt {
            dst,
            src,
            rnd,
            irnd,
            sat,
            ftz,
            d: o.reg(0)?,
            a: o.src(1, src)?,
        },
        class,
    ))
}
