//! Decoding of memory instructions: `ld`/`st` in every space, `cp.async`, atomics.

use super::operands::{HINTS, Mods, Ops};
use super::ops::{AtomOp, Class, Op, Space};
use crate::EmuError;
use crate::parse::{Imm, Operand};
use crate::types::Ty;

pub(super) fn space_of(m: &mut Mods) -> Space {
    match m.take_one(&["global", "shared", "local", "param"]) {
        Some("global") => Space::Global,
        Some("shared") => Space::Shared,
        Some("local") => Space::Local,
        Some("param") => Space::Param,
        _ => Space::Generic,
    }
}

pub(super) fn decode_ldst(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
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

pub(super) fn decode_cp_async(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
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

pub(super) fn decode_atom(o: &Ops, m: &mut Mods, base: &str) -> Result<(Op, Class), EmuError> {
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
