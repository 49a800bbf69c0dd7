//! Resolves the raw syntax tree into [`Kernel`]s: registers become indices into a flat
//! register file, variables become offsets in their space, labels become instruction
//! indices, and every opcode becomes an [`ops::Op`] (see `instr.rs`).

mod instr;
mod memory_ops;
mod operands;
pub(crate) mod ops;
mod warp_ops;

use std::collections::HashMap;

use crate::EmuError;
use crate::parse::{RawKernel, RawModule, Stmt, VarDecl, VarSpace};
use crate::types::Ty;
use ops::{Instr, Reg};

/// Most registers (of all types) one kernel may declare: each costs 256 bytes per warp.
pub(crate) const MAX_REGISTERS: usize = 1 << 16;

/// One declared kernel parameter as laid out in the param space.
#[derive(Debug, Clone)]
pub(crate) struct KParam {
    pub name: String,
    pub ty: Ty,
    pub offset: u64,
    pub bytes: u64,
}

/// Source information of one decoded instruction, for error messages.
#[derive(Debug, Clone)]
pub(crate) struct SrcInfo {
    pub line: usize,
    pub text: String,
}

/// A decoded `.entry`.
#[derive(Debug, Clone)]
pub(crate) struct Kernel {
    pub name: String,
    pub params: Vec<KParam>,
    pub param_bytes: u64,
    pub nregs: usize,
    /// Most 32-bit registers live at once, each register live from its first to its last
    /// mention in program order (a linear-scan estimate of ptxas's allocation).
    pub live_gpr32: usize,
    /// Bytes of static shared memory (module and kernel `.shared` arrays).
    pub shared_static: u64,
    /// Offset of `.extern .shared` arrays (the dynamic shared memory), if declared.
    pub dyn_shared_offset: Option<u64>,
    pub local_bytes: u64,
    pub code: Vec<Instr>,
    pub info: Vec<SrcInfo>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Sym {
    Reg(Reg),
    Shared(u64),
    Local(u64),
    Param(u64),
    Label(u32),
}

pub(crate) struct Scope<'a> {
    pub syms: &'a HashMap<String, Sym>,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a.max(1)).saturating_mul(a.max(1))
}

fn place_vars(
    vars: &[VarDecl],
    space: VarSpace,
    mut size: u64,
    syms: &mut HashMap<String, Sym>,
    externs: &mut Vec<String>,
) -> u64 {
    for v in vars.iter().filter(|v| v.space == space) {
        match v.count {
            Some(n) => {
                size = align_up(size, v.align as u64);
                let sym = match space {
                    VarSpace::Shared => Sym::Shared(size),
                    VarSpace::Local => Sym::Local(size),
                };
                syms.insert(v.name.clone(), sym);
                size = size.saturating_add(n.saturating_mul(v.elem.bytes() as u64));
            }
            None => externs.push(v.name.clone()),
        }
    }
    size
}

fn decode_kernel(module_shared: &[VarDecl], k: &RawKernel) -> Result<Kernel, EmuError> {
    let mut syms: HashMap<String, Sym> = HashMap::new();
    let mut params = Vec::new();
    let mut poff = 0u64;
    for p in &k.params {
        poff = align_up(poff, p.align as u64);
        let bytes = p.ty.bytes() as u64 * p.count;
        syms.insert(p.name.clone(), Sym::Param(poff));
        params.push(KParam {
            name: p.name.clone(),
            ty: p.ty,
            offset: poff,
            bytes,
        });
        poff += bytes;
    }
    let mut nregs = 0usize;
    let mut widths = Vec::with_capacity(k.regs.len());
    for (ty, name, line) in &k.regs {
        if syms.contains_key(name) {
            return Err(EmuError::Parse {
                line: *line,
                message: format!("`{name}` declared twice"),
            });
        }
        // Registers hold raw bits; instructions carry types. The type only sizes the
        // register-file estimate.
        let width = if *ty == Ty::Pred {
            0
        } else {
            ty.bytes().div_ceil(4) as usize
        };
        widths.push(width);
        syms.insert(name.clone(), Sym::Reg(nregs as Reg));
        nregs += 1;
    }
    if nregs > MAX_REGISTERS {
        return Err(EmuError::Unsupported {
            line: k.regs.last().map_or(0, |r| r.2),
            instruction: ".reg".into(),
            reason: format!(
                "{nregs} registers declared; the emulator supports up to {MAX_REGISTERS}"
            ),
        });
    }
    let mut externs = Vec::new();
    let mut shared = place_vars(module_shared, VarSpace::Shared, 0, &mut syms, &mut externs);
    shared = place_vars(&k.vars, VarSpace::Shared, shared, &mut syms, &mut externs);
    let local = place_vars(&k.vars, VarSpace::Local, 0, &mut syms, &mut externs);
    let dyn_off = if externs.is_empty() {
        None
    } else {
        let max_align = module_shared
            .iter()
            .chain(&k.vars)
            .filter(|v| v.count.is_none())
            .map(|v| v.align as u64)
            .max()
            .unwrap_or(16)
            .max(16);
        let off = align_up(shared, max_align);
        for e in externs {
            syms.insert(e, Sym::Shared(off));
        }
        Some(off)
    };
    // Labels first, so forward branches resolve.
    let mut pc = 0u32;
    for s in &k.body {
        match s {
            Stmt::Label(name, line) => {
                if syms.insert(name.clone(), Sym::Label(pc)).is_some() {
                    return Err(EmuError::Parse {
                        line: *line,
                        message: format!("`{name}` defined twice"),
                    });
                }
            }
            Stmt::Instr(_) => pc += 1,
        }
    }
    let scope = Scope { syms: &syms };
    let mut code = Vec::new();
    let mut info = Vec::new();
    for s in &k.body {
        if let Stmt::Instr(ri) = s {
            let ins = instr::decode(&scope, ri)?;
            code.push(ins);
            info.push(SrcInfo {
                line: ri.line,
                text: ri.text.clone(),
            });
        }
    }
    let live_gpr32 = register_pressure(&code, &widths);
    Ok(Kernel {
        name: k.name.clone(),
        params,
        param_bytes: poff,
        nregs,
        live_gpr32,
        shared_static: shared,
        dyn_shared_offset: dyn_off,
        local_bytes: local,
        code,
        info,
    })
}

/// Decodes every entry of a parsed module.
pub(crate) fn decode_module(m: &RawModule) -> Result<Vec<Kernel>, EmuError> {
    m.kernels
        .iter()
        .map(|k| decode_kernel(&m.shared, k))
        .collect()
}

/// Convenience for operand errors.
pub(crate) fn unsupported(ri: &crate::parse::RawInstr, reason: impl Into<String>) -> EmuError {
    EmuError::Unsupported {
        line: ri.line,
        instruction: ri.text.clone(),
        reason: reason.into(),
    }
}

/// The most 32-bit registers live at once when each register lives from its first to its
/// last mention in program order (`widths[r]`: 32-bit units of register `r`, 0 for
/// predicates). Loops are covered as far as a loop-carried value is mentioned at both ends.
fn register_pressure(code: &[Instr], widths: &[usize]) -> usize {
    let mut first = vec![usize::MAX; widths.len()];
    let mut last = vec![0usize; widths.len()];
    for (i, ins) in code.iter().enumerate() {
        for &r in ins.reads.iter().chain(ins.writes.iter()) {
            let r = r as usize;
            first[r] = first[r].min(i);
            last[r] = last[r].max(i);
        }
    }
    let mut delta = vec![0isize; code.len() + 1];
    for r in 0..widths.len() {
        if first[r] != usize::MAX {
            delta[first[r]] += widths[r] as isize;
            delta[last[r] + 1] -= widths[r] as isize;
        }
    }
    let (mut live, mut most) = (0isize, 0isize);
    for d in delta {
        live += d;
        most = most.max(live);
    }
    most as usize
}
