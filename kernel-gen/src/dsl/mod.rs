//! The kernel DSL: a typed builder ([`KernelBuilder`]) that records instructions as data
//! ([`Op`]), a legalise pass, and a 1:1 op → PTX text emitter.

mod builder;
pub mod emit;
mod kernel;
pub mod legalise;
mod ops;
pub mod tiles;
mod types;

pub use builder::{CpAsyncCache, KernelBuilder, ParamRef, SharedRef};
pub use kernel::{Kernel, Param, SharedArray};
pub use ops::{BinOp, Guard, Instr, MulMode, Op, ShflMode, UnOp};
pub use types::{
    AddrBase, Address, Axis, Cmp, Imm, Label, Operand, Precision, Reg, Rounding, Space, Sreg, Ty,
};
