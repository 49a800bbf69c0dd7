//! Global and shared loads and stores, scalar and vectorised.

use super::KernelBuilder;
use crate::dsl::ops::Op;
use crate::dsl::types::{AddrBase, Address, Operand, Reg, Space, Ty};

impl KernelBuilder {
    // ---- memory ----

    pub(super) fn check_addr(&mut self, space: Space, addr: &Address) {
        match (&addr.base, space) {
            (AddrBase::Reg(r), Space::Global) if r.ty != Ty::U64 => {
                self.fail(format!("global address in {r}, which is not .u64"));
            }
            (AddrBase::Reg(r), Space::Shared) if !matches!(r.ty, Ty::U32 | Ty::U64) => {
                self.fail(format!("shared address in {r}, which is not .u32/.u64"));
            }
            (AddrBase::Symbol(s), Space::Global) => {
                self.fail(format!("global access through shared symbol {s}"));
            }
            _ => {}
        }
    }

    /// Load one value of type `ty`.
    pub fn ld(&mut self, space: Space, ty: Ty, addr: Address) -> Reg {
        self.ld_vec(space, ty, 1, addr)[0]
    }

    /// Load `n` ∈ {1, 2, 4} consecutive values of type `ty` (`ld.v2`/`ld.v4`); the address
    /// must be aligned to the whole vector.
    pub fn ld_vec(&mut self, space: Space, ty: Ty, n: usize, addr: Address) -> Vec<Reg> {
        if !matches!(n, 1 | 2 | 4) || ty == Ty::Pred || n as u32 * ty.bits() > 128 {
            self.fail(format!("ld.v{n}{}: not a legal vector access", ty.suffix()));
        }
        self.check_addr(space, &addr);
        self.push_writing(ty, n, |dsts| Op::Ld { space, dsts, addr })
    }

    /// Store one value.
    pub fn st(&mut self, space: Space, addr: Address, src: impl Into<Operand>) {
        let src = src.into();
        let ty = self.infer("st", &[src]);
        self.st_vec(space, ty, addr, &[src]);
    }

    /// Store 1, 2 or 4 values of type `ty` (`st.v2`/`st.v4`).
    pub fn st_vec(&mut self, space: Space, ty: Ty, addr: Address, srcs: &[Operand]) {
        let n = srcs.len();
        if !matches!(n, 1 | 2 | 4) || ty == Ty::Pred || n as u32 * ty.bits() > 128 {
            self.fail(format!("st.v{n}{}: not a legal vector access", ty.suffix()));
        }
        for &s in srcs {
            self.check("st", s, ty);
        }
        self.check_addr(space, &addr);
        self.push(Op::St {
            space,
            ty,
            srcs: srcs.to_vec(),
            addr,
        });
    }
}
