//! Opcode decoding: one `RawInstr` into one [`Op`]. Every modifier must be understood or
//! explicitly ignorable (cache and scope hints); anything else is an `Unsupported` error.

use super::ops::{
    Addr, AddrBase, AtomOp, BoolOp, Class, Cmp, FMods, FType, FloatOp, FloatUnOp, Instr, IntOp,
    IntUnOp, MadMode, Op, Reg, ShflMode, Space, Special, Src, VoteMode,
};
use super::{Scope, Sym, unsupported};
use crate::EmuError;
use crate::memory_map::{LOCAL_WINDOW, SHARED_WINDOW};
use crate::parse::{Imm, Operand, RawInstr};
use crate::types::{Fmt, IntRnd, Rnd, Ty};

/// Cache, eviction, memory-order and scope hints: they change timing or ordering guarantees
/// only, which a sequentially consistent emulator already gives.
const HINTS: &[&str] = &[
    "ca",
    "cg",
    "cs",
    "lu",
    "cv",
    "wb",
    "wt",
    "volatile",
    "weak",
    "relaxed",
    "acquire",
    "release",
    "acq_rel",
    "cta",
    "gpu",
    "sys",
    "L1::evict_normal",
    "L1::evict_unchanged",
    "L1::evict_first",
    "L1::evict_last",
    "L1::no_allocate",
    "L2::evict_normal",
    "L2::evict_first",
    "L2::evict_last",
    "L2::64B",
    "L2::128B",
    "L2::256B",
    "L2::cache_hint",
];

struct Mods<'a> {
    ri: &'a RawInstr,
    parts: Vec<String>,
}

impl<'a> Mods<'a> {
    fn new(ri: &'a RawInstr) -> (String, Mods<'a>) {
        let mut it = ri.opcode.split('.');
        let base = it.next().unwrap_or_default().to_string();
        let parts = it
            .map(|p| p.strip_suffix("::cta").unwrap_or(p).to_string())
            .collect();
        (base, Mods { ri, parts })
    }

    fn take(&mut self, m: &str) -> bool {
        if let Some(i) = self.parts.iter().position(|p| p == m) {
            self.parts.remove(i);
            true
        } else {
            false
        }
    }

    fn take_one(&mut self, opts: &[&'static str]) -> Option<&'static str> {
        opts.iter().copied().find(|o| self.take(o))
    }

    fn ignore(&mut self, opts: &[&str]) {
        self.parts.retain(|p| !opts.contains(&p.as_str()));
    }

    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        self.parts.retain(|p| match Ty::parse(p) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }

    fn one_type(&mut self) -> Result<Ty, EmuError> {
        let t = self.types();
        if t.len() == 1 {
            Ok(t[0])
        } else {
            Err(unsupported(
                self.ri,
                format!("expected one type suffix, found {t:?}"),
            ))
        }
    }

    fn rnd(&mut self) -> Rnd {
        match self.take_one(&["rn", "rz", "rm", "rp"]) {
            Some("rz") => Rnd::Rz,
            Some("rm") => Rnd::Rm,
            Some("rp") => Rnd::Rp,
            _ => Rnd::Rn,
        }
    }

    fn finish(self) -> Result<(), EmuError> {
        if let Some(p) = self.parts.first() {
            return Err(unsupported(
                self.ri,
                format!("modifier `.{p}` is not supported"),
            ));
        }
        Ok(())
    }
}

struct Ops<'a, 'b> {
    ri: &'a RawInstr,
    scope: &'a Scope<'b>,
}

fn special(name: &str) -> Option<Special> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = name.rsplit_once('.') {
        let d = dim(d)?;
        return match base {
            "%tid" => Some(Special::Tid(d)),
            "%ntid" => Some(Special::Ntid(d)),
            "%ctaid" => Some(Special::Ctaid(d)),
            "%nctaid" => Some(Special::Nctaid(d)),
            _ => None,
        };
    }
    match name {
        "%laneid" => Some(Special::LaneId),
        "%warpid" => Some(Special::WarpId),
        "%nwarpid" => Some(Special::NWarpId),
        _ => None,
    }
}

/// Converts an immediate to the bits of `ty`.
fn imm_bits(imm: Imm, ty: Ty) -> u64 {
    let fmt = ty.float_fmt().or(match ty {
        Ty::F16x2 => Some(Fmt::F16),
        Ty::Bf16x2 => Some(Fmt::Bf16),
        _ => None,
    });
    match (imm, fmt) {
        (Imm::Int(v), Some(f)) => f.round_int(v as i64 as i128, Rnd::Rn),
        (Imm::Int(v), None) => ty.normalize(v),
        (Imm::F32(b), Some(Fmt::F32)) => b as u64,
        (Imm::F32(b), Some(f)) => f.round(f32::from_bits(b) as f64, 0.0, Rnd::Rn),
        (Imm::F32(b), None) => ty.normalize(b as u64),
        (Imm::F64(b), Some(f)) => f.round(f64::from_bits(b), 0.0, Rnd::Rn),
        (Imm::F64(b), None) if ty.bits() == 64 => b,
        (Imm::F64(b), None) => Fmt::F32.round(f64::from_bits(b), 0.0, Rnd::Rn),
    }
}

impl Ops<'_, '_> {
    fn err(&self, reason: impl Into<String>) -> EmuError {
        unsupported(self.ri, reason)
    }

    fn count(&self, n: usize) -> Result<(), EmuError> {
        if self.ri.operands.len() == n {
            Ok(())
        } else {
            Err(self.err(format!(
                "expected {n} operands, found {}",
                self.ri.operands.len()
            )))
        }
    }

    fn op(&self, i: usize) -> Result<&Operand, EmuError> {
        self.ri
            .operands
            .get(i)
            .ok_or_else(|| self.err(format!("missing operand {}", i + 1)))
    }

    fn reg_named(&self, n: &str) -> Result<Reg, EmuError> {
        match self.scope.syms.get(n) {
            Some(Sym::Reg(r)) => Ok(*r),
            Some(_) => Err(self.err(format!("`{n}` is not a register"))),
            None => Err(self.err(format!("`{n}` is not declared"))),
        }
    }

    fn reg(&self, i: usize) -> Result<Reg, EmuError> {
        match self.op(i)? {
            Operand::Name(n) => self.reg_named(n),
            other => Err(self.err(format!(
                "operand {} must be a register, found {other:?}",
                i + 1
            ))),
        }
    }

    fn src_of(&self, o: &Operand, ty: Ty) -> Result<Src, EmuError> {
        match o {
            Operand::Name(n) => match self.scope.syms.get(n.as_str()) {
                Some(Sym::Reg(r)) => Ok(Src::Reg(*r)),
                Some(Sym::Shared(off) | Sym::Local(off)) => Ok(Src::Imm(*off)),
                Some(_) => Err(self.err(format!("`{n}` cannot be used as a value"))),
                None => special(n)
                    .map(Src::Special)
                    .ok_or_else(|| self.err(format!("`{n}` is not declared"))),
            },
            Operand::Imm(imm) => Ok(Src::Imm(imm_bits(*imm, ty))),
            other => Err(self.err(format!("expected a register or immediate, found {other:?}"))),
        }
    }

    fn src(&self, i: usize, ty: Ty) -> Result<Src, EmuError> {
        self.src_of(self.op(i)?, ty)
    }

    fn vec_regs(&self, i: usize, n: usize) -> Result<[Reg; 4], EmuError> {
        let mut out = [0; 4];
        match self.op(i)? {
            Operand::Vector(v) if v.len() == n => {
                for (k, o) in v.iter().enumerate() {
                    match o {
                        Operand::Name(name) => out[k] = self.reg_named(name)?,
                        other => {
                            return Err(
                                self.err(format!("vector element {other:?} must be a register"))
                            );
                        }
                    }
                }
                Ok(out)
            }
            Operand::Name(name) if n == 1 => {
                out[0] = self.reg_named(name)?;
                Ok(out)
            }
            other => Err(self.err(format!(
                "operand {} must be a {n}-vector, found {other:?}",
                i + 1
            ))),
        }
    }

    fn vec_srcs(&self, i: usize, n: usize, ty: Ty) -> Result<[Src; 4], EmuError> {
        let mut out = [Src::Imm(0); 4];
        match self.op(i)? {
            Operand::Vector(v) if v.len() == n => {
                for (k, o) in v.iter().enumerate() {
                    out[k] = self.src_of(o, ty)?;
                }
                Ok(out)
            }
            o if n == 1 => {
                out[0] = self.src_of(o, ty)?;
                Ok(out)
            }
            other => Err(self.err(format!(
                "operand {} must be a {n}-vector, found {other:?}",
                i + 1
            ))),
        }
    }

    fn addr(&self, i: usize, space: Space) -> Result<Addr, EmuError> {
        let Operand::Addr { base, offset } = self.op(i)? else {
            return Err(self.err(format!("operand {} must be an address `[…]`", i + 1)));
        };
        let base = match base {
            None => AddrBase::Abs(0),
            Some(n) => match (self.scope.syms.get(n.as_str()), space) {
                (Some(Sym::Reg(r)), _) => AddrBase::Reg(*r),
                (Some(Sym::Shared(o)), Space::Shared)
                | (Some(Sym::Local(o)), Space::Local)
                | (Some(Sym::Param(o)), Space::Param) => AddrBase::Abs(*o),
                (Some(Sym::Shared(o)), Space::Generic) => AddrBase::Abs(SHARED_WINDOW + *o),
                (Some(Sym::Local(o)), Space::Generic) => AddrBase::Abs(LOCAL_WINDOW + *o),
                (Some(_), _) => {
                    return Err(self.err(format!("`{n}` is not in the state space {space:?}")));
                }
                (None, _) => return Err(self.err(format!("`{n}` is not declared"))),
            },
        };
        Ok(Addr {
            base,
            offset: *offset,
        })
    }

    fn label(&self, i: usize) -> Result<u32, EmuError> {
        match self.op(i)? {
            Operand::Name(n) => match self.scope.syms.get(n.as_str()) {
                Some(Sym::Label(pc)) => Ok(*pc),
                _ => Err(self.err(format!("`{n}` is not a label"))),
            },
            other => Err(self.err(format!("branch target must be a label, found {other:?}"))),
        }
    }
}

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

fn space_of(m: &mut Mods) -> Space {
    match m.take_one(&["global", "shared", "local", "param"]) {
        Some("global") => Space::Global,
        Some("shared") => Space::Shared,
        Some("local") => Space::Local,
        Some("param") => Space::Param,
        _ => Space::Generic,
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
    Ok(Instr { op, guard, class })
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

fn decode_ldst(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let space = space_of(m);
    let nc = m.take("nc") || base == "ldu";
    m.ignore(HINTS);
    let n: usize = match m.take_one(&["v2", "v4"]) {
        Some("v2") => 2,
        Some("v4") => 4,
        _ => 1,
    };
    let ty = m.one_type()?;
    if ty == Ty::Pred
        || matches!(ty, Ty::F16x2 | Ty::Bf16x2) && n > 1 && ty.bits() as usize * n > 128
    {
        return Err(o.err("unsupported load/store type"));
    }
    o.count(2)?;
    let load = base != "st";
    let class = match (space, load) {
        (Space::Shared, true) => Class::LdShared,
        (Space::Shared, false) => Class::StShared,
        (Space::Local, true) => Class::LdLocal,
        (Space::Local, false) => Class::StLocal,
        (Space::Param, true) => Class::LdParam,
        (Space::Param, false) => return Err(o.err("stores to .param are not supported")),
        (_, true) => Class::LdGlobal,
        (_, false) => Class::StGlobal,
    };
    let op = if load {
        Op::Ld {
            space,
            ty,
            n: n as u8,
            d: o.vec_regs(0, n)?,
            addr: o.addr(1, space)?,
            nc,
        }
    } else {
        Op::St {
            space,
            ty,
            n: n as u8,
            s: o.vec_srcs(1, n, ty)?,
            addr: o.addr(0, space)?,
        }
    };
    Ok((op, class))
}

fn decode_shfl(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    if !m.take("sync") {
        return Err(o.err("only shfl.sync is supported (shfl without .sync is gone since sm_70)"));
    }
    let mode = match m.take_one(&["up", "down", "bfly", "idx"]) {
        Some("up") => ShflMode::Up,
        Some("down") => ShflMode::Down,
        Some("bfly") => ShflMode::Bfly,
        Some("idx") => ShflMode::Idx,
        _ => return Err(o.err("shfl.sync needs a mode")),
    };
    let ty = m.one_type()?;
    if ty != Ty::B32 {
        return Err(o.err("shfl.sync is .b32 only"));
    }
    o.count(5)?;
    let (d, p) = match o.op(0)? {
        Operand::Pair(d, p) => (o.reg_named(d)?, Some(o.reg_named(p)?)),
        Operand::Name(d) => (o.reg_named(d)?, None),
        other => return Err(o.err(format!("shfl destination {other:?}"))),
    };
    Ok((
        Op::Shfl {
            mode,
            d,
            p,
            a: o.src(1, Ty::B32)?,
            b: o.src(2, Ty::B32)?,
            c: o.src(3, Ty::B32)?,
            mask: o.src(4, Ty::B32)?,
        },
        Class::Shfl,
    ))
}

fn decode_vote(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    if !m.take("sync") {
        return Err(o.err("only vote.sync is supported"));
    }
    let mode = match m.take_one(&["ballot", "any", "all", "uni"]) {
        Some("ballot") => VoteMode::Ballot,
        Some("any") => VoteMode::Any,
        Some("all") => VoteMode::All,
        Some("uni") => VoteMode::Uni,
        _ => return Err(o.err("vote.sync needs .ballot, .any, .all or .uni")),
    };
    let ty = m.one_type()?;
    if (mode == VoteMode::Ballot) != (ty == Ty::B32) || (ty != Ty::B32 && ty != Ty::Pred) {
        return Err(o.err("vote.sync.ballot is .b32; any/all/uni are .pred"));
    }
    o.count(3)?;
    let (a, neg) = match o.op(1)? {
        Operand::NotName(n) => (Src::Reg(o.reg_named(n)?), true),
        _ => (o.src(1, Ty::Pred)?, false),
    };
    Ok((
        Op::Vote {
            mode,
            d: o.reg(0)?,
            a,
            neg,
            mask: o.src(2, Ty::B32)?,
        },
        Class::Shfl,
    ))
}

fn decode_mma(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    for req in ["sync", "aligned", "m16n8k16", "row", "col"] {
        if !m.take(req) {
            return Err(o.err(format!(
                "only mma.sync.aligned.m16n8k16.row.col is supported (missing .{req})"
            )));
        }
    }
    let tys = m.types();
    let ab = match tys.as_slice() {
        [Ty::F32, Ty::F16, Ty::F16, Ty::F32] => Fmt::F16,
        [Ty::F32, Ty::Bf16, Ty::Bf16, Ty::F32] => Fmt::Bf16,
        _ => {
            return Err(o.err(format!(
                "mma types {tys:?} not supported (need .f32.f16.f16.f32 or .f32.bf16.bf16.f32)"
            )));
        }
    };
    o.count(4)?;
    let d = o.vec_regs(0, 4)?;
    let a = o.vec_srcs(1, 4, Ty::B32)?;
    let b2 = o.vec_srcs(2, 2, Ty::B32)?;
    let c = o.vec_srcs(3, 4, Ty::F32)?;
    Ok((
        Op::Mma {
            ab,
            d,
            a,
            b: [b2[0], b2[1]],
            c,
        },
        Class::Mma,
    ))
}

fn decode_ldmatrix(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    for req in ["sync", "aligned", "m8n8"] {
        if !m.take(req) {
            return Err(o.err(format!(
                "only ldmatrix.sync.aligned.m8n8 is supported (missing .{req})"
            )));
        }
    }
    let num = match m.take_one(&["x1", "x2", "x4"]) {
        Some("x1") => 1,
        Some("x2") => 2,
        Some("x4") => 4,
        _ => return Err(o.err("ldmatrix needs .x1, .x2 or .x4")),
    };
    let trans = m.take("trans");
    let space = if m.take("shared") {
        Space::Shared
    } else {
        Space::Generic
    };
    if m.one_type()? != Ty::B16 {
        return Err(o.err("ldmatrix.m8n8 is .b16 only"));
    }
    o.count(2)?;
    Ok((
        Op::Ldmatrix {
            num,
            trans,
            space,
            d: o.vec_regs(0, num as usize)?,
            addr: o.addr(1, space)?,
        },
        Class::LdShared,
    ))
}

fn decode_cp_async(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
    if !m.take("async") {
        return Err(o.err("only cp.async is supported"));
    }
    if m.take("commit_group") {
        o.count(0)?;
        return Ok((Op::CpAsyncCommit, Class::Other));
    }
    if m.take("wait_all") {
        o.count(0)?;
        return Ok((Op::CpAsyncWait { n: 0, all: true }, Class::Other));
    }
    if m.take("wait_group") {
        o.count(1)?;
        let n = match o.op(0)? {
            Operand::Imm(Imm::Int(n)) => *n as u32,
            _ => return Err(o.err("cp.async.wait_group needs an immediate")),
        };
        return Ok((Op::CpAsyncWait { n, all: false }, Class::Other));
    }
    let cg = m.take("cg");
    if !cg && !m.take("ca") {
        return Err(o.err("cp.async needs .ca or .cg"));
    }
    if !(m.take("shared") && m.take("global")) {
        return Err(o.err("cp.async must copy .shared.global"));
    }
    m.ignore(HINTS);
    if !(3..=4).contains(&o.ri.operands.len()) {
        return Err(o.err("cp.async takes [dst], [src], size[, src-size]"));
    }
    let bytes = match o.op(2)? {
        Operand::Imm(Imm::Int(b)) if [4, 8, 16].contains(b) => *b as u32,
        _ => return Err(o.err("cp.async size must be 4, 8 or 16")),
    };
    if cg && bytes != 16 {
        return Err(o.err("cp.async.cg requires 16 bytes"));
    }
    let src_bytes = if o.ri.operands.len() == 4 {
        Some(o.src(3, Ty::U32)?)
    } else {
        None
    };
    Ok((
        Op::CpAsync {
            bytes,
            src_bytes,
            dst: o.addr(0, Space::Shared)?,
            src: o.addr(1, Space::Global)?,
        },
        Class::LdGlobal,
    ))
}

fn decode_atom(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
    let space = space_of(m);
    if space != Space::Global && space != Space::Generic {
        return Err(o.err("only global atomics are supported"));
    }
    m.ignore(HINTS);
    let op = match m.take_one(&["add", "min", "max", "exch", "cas", "and", "or", "xor"]) {
        Some("add") => AtomOp::Add,
        Some("min") => AtomOp::Min,
        Some("max") => AtomOp::Max,
        Some("exch") => AtomOp::Exch,
        Some("cas") => AtomOp::Cas,
        Some("and") => AtomOp::And,
        Some("or") => AtomOp::Or,
        Some("xor") => AtomOp::Xor,
        _ => return Err(o.err("atomic operation missing")),
    };
    let ty = m.one_type()?;
    if !matches!(
        ty,
        Ty::F32 | Ty::U32 | Ty::S32 | Ty::U64 | Ty::B32 | Ty::B64 | Ty::S64
    ) {
        return Err(o.err(format!("atomic type {ty:?} not supported")));
    }
    if ty == Ty::F32 && !matches!(op, AtomOp::Add | AtomOp::Exch) {
        return Err(o.err("f32 atomics support add and exch only"));
    }
    let red = base == "red";
    let first = usize::from(!red);
    let nsrc = if op == AtomOp::Cas { 2 } else { 1 };
    o.count(first + 1 + nsrc)?;
    Ok((
        Op::Atom {
            op,
            ty,
            space,
            d: if red { None } else { Some(o.reg(0)?) },
            addr: o.addr(first, space)?,
            b: o.src(first + 1, ty)?,
            c: if op == AtomOp::Cas {
                Some(o.src(first + 2, ty)?)
            } else {
                None
            },
        },
        Class::Atomic,
    ))
}
