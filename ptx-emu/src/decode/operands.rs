//! Operand and modifier helpers shared by the opcode decoders: modifier sets that must be
//! consumed completely, and operands resolved against the kernel's symbols.

use super::ops::{Addr, AddrBase, Reg, Space, Special, Src};
use super::{Scope, Sym, unsupported};
use crate::EmuError;
use crate::memory_map::{LOCAL_WINDOW, SHARED_WINDOW};
use crate::parse::{Imm, Operand, RawInstr};
use crate::types::{Fmt, Rnd, Ty};

/// Cache, eviction, memory-order and scope hints: they change timing or ordering guarantees
/// only, which a sequentially consistent emulator already gives.
pub(super) const HINTS: &[&str] = &[
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

pub(super) struct Mods<'a> {
    pub(super) ri: &'a RawInstr,
    pub(super) parts: Vec<String>,
}

impl<'a> Mods<'a> {
    pub(super) fn new(ri: &'a RawInstr) -> (String, Mods<'a>) {
        let mut it = ri.opcode.split('.');
        let base = it.next().unwrap_or_default().to_string();
        let parts = it
            .map(|p| p.strip_suffix("::cta").unwrap_or(p).to_string())
            .collect();
        (base, Mods { ri, parts })
    }

    pub(super) fn take(&mut self, m: &str) -> bool {
        if let Some(i) = self.parts.iter().position(|p| p == m) {
            self.parts.remove(i);
            true
        } else {
            false
        }
    }

    pub(super) fn take_one(&mut self, opts: &[&'static str]) -> Option<&'static str> {
        opts.iter().copied().find(|o| self.take(o))
    }

    pub(super) fn ignore(&mut self, opts: &[&str]) {
        self.parts.retain(|p| !opts.contains(&p.as_str()));
    }

    pub(super) fn types(&mut self) -> Vec<Ty> {
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

    pub(super) fn one_type(&mut self) -> Result<Ty, EmuError> {
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

    pub(super) fn rnd(&mut self) -> Rnd {
        match self.take_one(&["rn", "rz", "rm", "rp"]) {
            Some("rz") => Rnd::Rz,
            Some("rm") => Rnd::Rm,
            Some("rp") => Rnd::Rp,
            _ => Rnd::Rn,
        }
    }

    pub(super) fn finish(self) -> Result<(), EmuError> {
        if let Some(p) = self.parts.first() {
            return Err(unsupported(
                self.ri,
                format!("modifier `.{p}` is not supported"),
            ));
        }
        Ok(())
    }
}

pub(super) struct Ops<'a, 'b> {
    pub(super) ri: &'a RawInstr,
    pub(super) scope: &'a Scope<'b>,
}

pub(super) fn special(name: &str) -> Option<Special> {
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
pub(super) fn imm_bits(imm: Imm, ty: Ty) -> u64 {
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
    pub(super) fn err(&self, reason: impl Into<String>) -> EmuError {
        unsupported(self.ri, reason)
    }

    pub(super) fn count(&self, n: usize) -> Result<(), EmuError> {
        if self.ri.operands.len() == n {
            Ok(())
        } else {
            Err(self.err(format!(
                "expected {n} operands, found {}",
                self.ri.operands.len()
            )))
        }
    }

    pub(super) fn op(&self, i: usize) -> Result<&Operand, EmuError> {
        self.ri
            .operands
            .get(i)
            .ok_or_else(|| self.err(format!("missing operand {}", i + 1)))
    }

    pub(super) fn reg_named(&self, n: &str) -> Result<Reg, EmuError> {
        match self.scope.syms.get(n) {
            Some(Sym::Reg(r)) => Ok(*r),
            Some(_) => Err(self.err(format!("`{n}` is not a register"))),
            None => Err(self.err(format!("`{n}` is not declared"))),
        }
    }

    pub(super) fn reg(&self, i: usize) -> Result<Reg, EmuError> {
        match self.op(i)? {
            Operand::Name(n) => self.reg_named(n),
            other => Err(self.err(format!(
                "operand {} must be a register, found {other:?}",
                i + 1
            ))),
        }
    }

    pub(super) fn src_of(&self, o: &Operand, ty: Ty) -> Result<Src, EmuError> {
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

    pub(super) fn src(&self, i: usize, ty: Ty) -> Result<Src, EmuError> {
        self.src_of(self.op(i)?, ty)
    }

    pub(super) fn vec_regs(&self, i: usize, n: usize) -> Result<[Reg; 4], EmuError> {
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

    pub(super) fn vec_srcs(&self, i: usize, n: usize, ty: Ty) -> Result<[Src; 4], EmuError> {
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

    pub(super) fn addr(&self, i: usize, space: Space) -> Result<Addr, EmuError> {
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

    pub(super) fn label(&self, i: usize) -> Result<u32, EmuError> {
        match self.op(i)? {
            Operand::Name(n) => match self.scope.syms.get(n.as_str()) {
                Some(Sym::Label(pc)) => Ok(*pc),
                _ => Err(self.err(format!("`{n}` is not a label"))),
            },
            other => Err(self.err(format!("branch target must be a label, found {other:?}"))),
        }
    }
}
