//! Decoding of warp-collective instructions: `shfl.sync`, `vote.sync`, `mma.sync`,
//! `ldmatrix`.

use super::operands::{Mods, Ops};
use super::ops::{Class, Op, ShflMode, Space, Src, VoteMode};
use crate::EmuError;
use crate::parse::Operand;
use crate::types::{Fmt, Ty};

pub(super) fn decode_shfl(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
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

pub(super) fn decode_vote(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
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

pub(super) fn decode_mma(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
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

pub(super) fn decode_ldmatrix(o: &Ops, m: &mut Mods) -> Result<(Op, Class), EmuError> {
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
