//! Predication, labels, branches, runtime loops, barriers and warp collectives.

use super::KernelBuilder;
use crate::dsl::ops::{Guard, Op, ShflMode};
use crate::dsl::types::{Cmp, Imm, Label, Operand, Reg, Ty};

impl KernelBuilder {
    // ---- control flow and synchronisation ----

    /// Run `body` with every instruction it adds guarded by `pred` (or `!pred`).
    pub fn guarded(&mut self, pred: Reg, negate: bool, body: impl FnOnce(&mut Self)) {
        if pred.ty != Ty::Pred {
            self.fail(format!("guard {pred} is not a predicate"));
        }
        if self.guard.is_some() {
            self.fail("nested guards (combine the predicates with `and`)".into());
        }
        self.guard = Some(Guard { pred, negate });
        body(self);
        self.guard = None;
    }

    /// A fresh label (place it with [`Self::place`]).
    pub fn label(&mut self) -> Label {
        self.next_label += 1;
        Label(self.next_label)
    }

    /// Place `label` here.
    pub fn place(&mut self, label: Label) {
        self.push(Op::Label(label));
    }

    /// Branch to `target` (inside [`Self::guarded`] it is a conditional branch).
    pub fn bra(&mut self, target: Label) {
        self.push(Op::Bra { target, uni: false });
    }

    /// Branch to `target`, asserting every thread of the warp takes it (`bra.uni`).
    pub fn bra_uni(&mut self, target: Label) {
        self.push(Op::Bra { target, uni: true });
    }

    /// Branch to `target` where `pred` holds (`negate`: where it does not).
    pub fn bra_if(&mut self, pred: Reg, negate: bool, target: Label) {
        self.guarded(pred, negate, |kb| kb.bra(target));
    }

    /// A runtime loop `for i in (start..end).step_by(step)` on a `.u32` counter. The body gets
    /// the counter; it runs zero times when `start >= end`.
    pub fn for_range(
        &mut self,
        start: impl Into<Operand>,
        end: impl Into<Operand>,
        step: u32,
        body: impl FnOnce(&mut Self, Reg),
    ) {
        let (start, end) = (start.into(), end.into());
        let i = self.mov(Ty::U32, start);
        let (top, done) = (self.label(), self.label());
        let known_nonempty = matches!(
            (start, end),
            (Operand::Imm(Imm::Int(s)), Operand::Imm(Imm::Int(e))) if s < e
        );
        if !known_nonempty {
            let skip = self.setp(Cmp::Ge, i, end);
            self.bra_if(skip, false, done);
        }
        self.place(top);
        body(self, i);
        let next = self.add(i, step);
        self.assign(i, next);
        let again = self.setp(Cmp::Lt, i, end);
        self.bra_if(again, false, top);
        self.place(done);
    }

    /// `bar.sync id`: every thread of the CTA waits here; shared writes before it are visible
    /// after it.
    pub fn bar_sync(&mut self, id: u32) {
        if id >= 16 {
            self.fail(format!("barrier {id} out of range 0..16"));
        }
        self.push(Op::BarSync { id });
    }

    /// `shfl.sync` over the lanes in `mask` (a warp collective: those lanes must converge).
    pub fn warp_shfl(
        &mut self,
        mode: ShflMode,
        a: Reg,
        b: impl Into<Operand>,
        c: impl Into<Operand>,
        mask: u32,
    ) -> Reg {
        let (b, c) = (b.into(), c.into());
        if a.ty.bits() != 32 {
            self.fail(format!("shfl of {a}, which is not 32-bit"));
        }
        self.check("shfl lane", b, Ty::U32);
        self.check("shfl clamp", c, Ty::U32);
        let dst = self.reg(a.ty);
        self.push(Op::WarpShfl {
            mode,
            dst,
            a,
            b,
            c,
            mask,
        });
        dst
    }

    /// `ret`.
    pub fn ret(&mut self) {
        self.push(Op::Ret);
    }
}
