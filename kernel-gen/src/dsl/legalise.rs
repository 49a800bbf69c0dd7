//! The legalise pass: rewrites what the builder accepts but PTX cannot say directly, so that
//! the emitter stays a 1:1 op → text table.
//!
//! 1. `add/sub/mul` on bf16 exist only from sm_90: on sm_80 they become `fma.rn.bf16`
//!    (a·1 + b, a·b + (−0), b·(−1) + a), which round identically.
//! 2. Special registers are only legal as `mov` sources: elsewhere they are read into a
//!    `.u32` register first.
//! 3. PTX has no 16-bit float literal in arithmetic: f16/bf16/packed immediates are moved
//!    into a register (`mov.b16`/`mov.b32` of their bits) first.

use super::kernel::Kernel;
use super::ops::{BinOp, Instr, Op};
use super::types::{Imm, Operand, Reg, Rounding, Ty};

/// Apply every rule, in order.
pub fn legalise(kernel: Kernel) -> Kernel {
    let kernel = bf16_arith_to_fma(kernel);
    materialise_operands(kernel)
}

fn bf16_arith_to_fma(mut kernel: Kernel) -> Kernel {
    if kernel.arch.has_bf16_arith() {
        return kernel;
    }
    for instr in &mut kernel.instrs {
        if let Op::Bin {
            op, ty, dst, a, b, ..
        } = instr.op
            && matches!(ty, Ty::Bf16 | Ty::Bf16x2)
        {
            let (one, neg_one, neg_zero) = match ty {
                Ty::Bf16 => (Imm::Bf16(0x3F80), Imm::Bf16(0xBF80), Imm::Bf16(0x8000)),
                _ => (
                    Imm::Packed(0x3F80_3F80),
                    Imm::Packed(0xBF80_BF80),
                    Imm::Packed(0x8000_8000),
                ),
            };
            let fma = |a, b, c| Op::Fma {
                rnd: Rounding::Rn,
                ty,
                dst,
                a,
                b,
                c,
            };
            instr.op = match op {
                BinOp::Add => fma(a, one.into(), b),
                BinOp::Mul => fma(a, b, neg_zero.into()),
                BinOp::Sub => fma(b, neg_one.into(), a),
                _ => continue,
            };
        }
    }
    kernel
}

fn operands_mut(op: &mut Op) -> Vec<&mut Operand> {
    match op {
        Op::Bin { a, b, .. }
        | Op::IntMul { a, b, .. }
        | Op::Setp { a, b, .. }
        | Op::Selp { a, b, .. } => vec![a, b],
        Op::IntMad { a, b, c, .. } | Op::Fma { a, b, c, .. } => vec![a, b, c],
        Op::Un { a, .. } => vec![a],
        Op::CvtPack { hi, lo, .. } => vec![hi, lo],
        Op::St { srcs, .. } => srcs.iter_mut().collect(),
        Op::WarpShfl { b, c, .. } => vec![b, c],
        Op::CpAsync {
            src_bytes: Some(s), ..
        } => vec![s],
        _ => Vec::new(),
    }
}

fn materialise_operands(mut kernel: Kernel) -> Kernel {
    let mut out = Vec::with_capacity(kernel.instrs.len());
    let mut fresh = |ty: Ty| {
        let count = &mut kernel.reg_counts[ty.index()];
        let r = Reg { ty, id: *count };
        *count += 1;
        r
    };
    for mut instr in std::mem::take(&mut kernel.instrs) {
        let guard = instr.guard;
        let packed_ty = match &instr.op {
            Op::Bin { ty, .. } | Op::Fma { ty, .. } | Op::St { ty, .. } => *ty,
            _ => Ty::F16x2,
        };
        for operand in operands_mut(&mut instr.op) {
            let ty = match *operand {
                Operand::Sreg(_) => Ty::U32,
                Operand::Imm(Imm::F16(_)) => Ty::F16,
                Operand::Imm(Imm::Bf16(_)) => Ty::Bf16,
                Operand::Imm(Imm::Packed(_)) => packed_ty,
                _ => continue,
            };
            let r = fresh(ty);
            out.push(Instr {
                guard,
                op: Op::Mov {
                    dst: r,
                    src: *operand,
                },
            });
            *operand = Operand::Reg(r);
        }
        out.push(instr);
    }
    kernel.instrs = out;
    kernel
}
