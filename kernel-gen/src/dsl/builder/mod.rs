//! The typed builder: every method appends instructions and returns the registers it defines.
//!
//! Operand types are checked as instructions are added; the first mismatch is remembered and
//! returned by [`KernelBuilder::finish`], so generator code stays free of `?` on every line.
//! Rust control flow is generation time: a Rust `for` unrolls, a [`KernelBuilder::for_range`]
//! emits a runtime loop.

mod arith;
mod control;
mod memory;
mod tensor_core;

pub use tensor_core::CpAsyncCache;

use super::kernel::{Kernel, Param, SharedArray};
use super::ops::{Guard, Instr, Op};
use super::types::{AddrBase, Address, Operand, Reg, Sreg, Ty};
use crate::{Arch, GenError};

/// A handle on a declared kernel parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamRef {
    name: String,
    ty: Ty,
}

impl ParamRef {
    /// The parameter's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A handle on a declared shared array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRef {
    name: String,
    bytes: u32,
}

impl SharedRef {
    /// `[symbol+offset]`.
    pub fn at(&self, offset: i64) -> Address {
        Address {
            base: AddrBase::Symbol(self.name.clone()),
            offset,
        }
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }
}

/// Builds one [`Kernel`].
#[derive(Debug)]
pub struct KernelBuilder {
    kernel: Kernel,
    pub(super) guard: Option<Guard>,
    pub(super) next_label: u32,
    error: Option<GenError>,
}

impl KernelBuilder {
    /// Start a kernel named `name` for `arch`.
    pub fn new(name: impl Into<String>, arch: Arch) -> Self {
        KernelBuilder {
            kernel: Kernel {
                name: name.into(),
                arch,
                header: Vec::new(),
                params: Vec::new(),
                shared: Vec::new(),
                dynamic_shared: None,
                max_threads: None,
                min_ctas_per_sm: None,
                reg_counts: [0; Ty::ALL.len()],
                instrs: Vec::new(),
            },
            guard: None,
            next_label: 0,
            error: None,
        }
    }

    /// The target architecture.
    pub fn arch(&self) -> Arch {
        self.kernel.arch
    }

    /// Add a line to the module header comment.
    pub fn header(&mut self, line: impl Into<String>) {
        self.kernel.header.push(line.into());
    }

    /// Declare the CTA size ptxas may assume (`.maxntid n, 1, 1`).
    pub fn max_threads(&mut self, n: u32) {
        self.kernel.max_threads = Some(n);
    }

    /// Declare how many CTAs must fit on an SM together (`.minnctapersm n`), which bounds
    /// the registers ptxas may budget per thread from below.
    pub fn min_ctas_per_sm(&mut self, n: u32) {
        self.kernel.min_ctas_per_sm = Some(n);
    }

    /// The first error recorded, if any; otherwise the kernel.
    ///
    /// # Errors
    /// The first [`GenError`] any builder call recorded.
    pub fn finish(self) -> Result<Kernel, GenError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.kernel),
        }
    }

    pub(super) fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(GenError::Dsl {
                kernel: self.kernel.name.clone(),
                message,
            });
        }
    }

    pub(super) fn check(&mut self, what: &str, operand: Operand, ty: Ty) {
        if !operand.fits(ty) {
            self.fail(format!(
                "{what}: operand {operand} does not fit type {}",
                ty.suffix()
            ));
        }
    }

    pub(super) fn push(&mut self, op: Op) {
        self.kernel.instrs.push(Instr {
            guard: self.guard,
            op,
        });
    }

    /// `n` fresh registers of type `ty`, written by the op `make` builds from them (a vector
    /// load, an `ldmatrix`), which is pushed; returns the registers.
    pub(super) fn push_writing(
        &mut self,
        ty: Ty,
        n: usize,
        make: impl FnOnce(Vec<Reg>) -> Op,
    ) -> Vec<Reg> {
        let dsts: Vec<Reg> = (0..n).map(|_| self.reg(ty)).collect();
        self.push(make(dsts.clone()));
        dsts
    }

    /// A fresh register of type `ty`.
    pub fn reg(&mut self, ty: Ty) -> Reg {
        let count = &mut self.kernel.reg_counts[ty.index()];
        let r = Reg { ty, id: *count };
        *count += 1;
        r
    }

    /// A `// text` line in the emitted PTX.
    pub fn comment(&mut self, text: impl Into<String>) {
        self.push(Op::Comment(text.into()));
    }

    // ---- parameters and shared memory ----

    /// Declare `names` in order ([`Self::param`]): each `.u64` (a device pointer) unless
    /// `scalars` gives its type.
    pub fn params<const N: usize>(
        &mut self,
        names: [&str; N],
        scalars: &[(&str, Ty)],
    ) -> [ParamRef; N] {
        names.map(|name| {
            let ty = scalars
                .iter()
                .find(|&&(scalar, _)| scalar == name)
                .map_or(Ty::U64, |&(_, ty)| ty);
            self.param(name, ty)
        })
    }

    /// Declare a parameter (appended to the signature in call order).
    pub fn param(&mut self, name: &str, ty: Ty) -> ParamRef {
        if !matches!(ty, Ty::U32 | Ty::S32 | Ty::U64 | Ty::F32) {
            self.fail(format!(
                "parameter {name}: type {} is not a parameter type",
                ty.suffix()
            ));
        }
        self.kernel.params.push(Param {
            name: name.into(),
            ty,
        });
        ParamRef {
            name: name.into(),
            ty,
        }
    }

    /// `ld.param` of a declared parameter.
    pub fn ld_param(&mut self, p: &ParamRef) -> Reg {
        let dst = self.reg(p.ty);
        self.push(Op::LdParam {
            dst,
            param: p.name.clone(),
        });
        dst
    }

    /// Load a pointer parameter and convert it to a global address (`cvta.to.global`).
    pub fn global_ptr(&mut self, p: &ParamRef) -> Reg {
        if p.ty != Ty::U64 {
            self.fail(format!("global_ptr: parameter {} is not .u64", p.name));
        }
        let generic = self.ld_param(p);
        let dst = self.reg(Ty::U64);
        self.push(Op::CvtaToGlobal { dst, src: generic });
        dst
    }

    /// Declare a static shared array of `bytes` bytes aligned to `align`.
    pub fn shared_array(&mut self, name: &str, bytes: u32, align: u32, comment: &str) -> SharedRef {
        let (array, shared) = shared_decl(name, bytes, align, comment);
        self.kernel.shared.push(array);
        shared
    }

    /// Declare the kernel's dynamic shared memory (`.extern .shared .align a .b8 name[]`):
    /// `bytes` is what the launch must provide. One per kernel.
    pub fn dynamic_shared(
        &mut self,
        name: &str,
        bytes: u32,
        align: u32,
        comment: &str,
    ) -> SharedRef {
        if self.kernel.dynamic_shared.is_some() {
            self.fail(format!(
                "dynamic shared {name}: a kernel has one dynamic window"
            ));
        }
        let (array, shared) = shared_decl(name, bytes, align, comment);
        self.kernel.dynamic_shared = Some(array);
        shared
    }

    /// The shared-window address of a shared array (`mov.u32 r, symbol`).
    pub fn shared_addr(&mut self, s: &SharedRef) -> Reg {
        let dst = self.reg(Ty::U32);
        self.push(Op::MovSymbol {
            dst,
            symbol: s.name.clone(),
        });
        dst
    }

    // ---- moves ----

    /// Read a special register into a fresh `.u32`.
    pub fn sreg(&mut self, s: Sreg) -> Reg {
        self.mov(Ty::U32, s)
    }

    /// A fresh register of type `ty` holding `src`.
    pub fn mov(&mut self, ty: Ty, src: impl Into<Operand>) -> Reg {
        let dst = self.reg(ty);
        self.assign(dst, src);
        dst
    }

    /// `mov dst, src` into an existing register (loop-carried values).
    pub fn assign(&mut self, dst: Reg, src: impl Into<Operand>) {
        let src = src.into();
        if !(src.fits(dst.ty) || matches!(src, Operand::Sreg(_)) && dst.ty == Ty::U32) {
            self.check("mov", src, dst.ty);
        }
        self.push(Op::Mov { dst, src });
    }

    // ---- arithmetic ----

    pub(super) fn infer(&mut self, what: &str, operands: &[Operand]) -> Ty {
        if let Some(ty) = operands.iter().find_map(|o| match o {
            Operand::Reg(r) => Some(r.ty),
            _ => None,
        }) {
            ty
        } else {
            operands.iter().find_map(|o| o.ty()).unwrap_or_else(|| {
                self.fail(format!("{what}: cannot infer a type from immediates alone"));
                Ty::U32
            })
        }
    }
}

/// A shared array's declaration and the handle the kernel refers to it by.
fn shared_decl(name: &str, bytes: u32, align: u32, comment: &str) -> (SharedArray, SharedRef) {
    let array = SharedArray {
        name: name.into(),
        bytes,
        align,
        comment: comment.into(),
    };
    let shared = SharedRef {
        name: name.into(),
        bytes,
    };
    (array, shared)
}
