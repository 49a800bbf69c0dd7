//! The tensor-core backward's f32 state at its ends (ARCHITECTURE §7): loaded from H0 or dH_T
//! (transposed for dq and dk) into the warps' `mma` accumulators, its 16-bit head and rest
//! stored for the next chunk's products, and dv's dH0 and T⟨H0, dH0⟩ at the end.

use super::TC_SLICE;
use super::{Params, Tc, TcState, WARPS};
use crate::blocks::cta::warp_role;
use crate::dsl::tiles::AccTileF32;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, Reg, Rounding, Space, Sreg, Ty};

impl Tc {
    /// S = the role's initial state (H0ᵀ, dH_Tᵀ or dH_T; 0 when not given) in the warp's
    /// accumulators; S̃ and its rest stored.
    pub(super) fn load_state(&self, kb: &mut KernelBuilder, p: &Params) -> TcState {
        kb.comment("S = the initial state (or 0) in mma accumulators, state rows 16(w + 8j)..");
        let slices = (self.pd / 16 / WARPS).max(1);
        let raccs: Vec<AccTileF32> = (0..slices)
            .map(|_| AccTileF32::zeros(kb, TC_SLICE))
            .collect();
        let state = TcState { raccs };
        let skip = warp_role(kb, self.warp, self.pd / 16, WARPS);
        let at = self.state_ptr(kb, &p.state);
        self.state_elems(kb, &state, at, |kb, x, gat| {
            let v = kb.ld(Space::Global, Ty::F32, Address::reg(gat, 0));
            kb.assign(x, v);
        });
        self.store_rh(kb, &state);
        if let Some(skip) = skip {
            kb.place(skip);
        }
        kb.bar_sync(0);
        state
    }

    /// `(given, address of (b, h)'s state)` of a state parameter (given: not 0).
    pub(super) fn state_ptr(
        &self,
        kb: &mut KernelBuilder,
        param: &crate::dsl::ParamRef,
    ) -> (Reg, Reg) {
        let raw = kb.ld_param(param);
        let given = kb.setp(Cmp::Ne, raw, 0u64);
        let ptr = kb.global_ptr(param);
        let b = kb.sreg(Sreg::Ctaid(Axis::X));
        let bh = kb.mad_lo(b, self.heads, self.h);
        let bh_bytes = kb.mul_wide(bh, self.pg * self.ng * 4);
        (given, kb.add(ptr, bh_bytes))
    }

    /// The first row of the warp's state slice `j`: 16(w + 8j).
    pub(super) fn slice_row(&self, kb: &mut KernelBuilder, j: usize) -> Reg {
        if j == 0 {
            self.i0
        } else {
            kb.add(self.i0, 16 * WARPS * j as u32)
        }
    }

    /// Run `body(kb, element, global address)` for each state element the lane holds that
    /// exists in the `[K,V]` state at `(given, at)` (transposed for dq and dk), when given.
    pub(super) fn state_elems(
        &self,
        kb: &mut KernelBuilder,
        st: &TcState,
        (given, at): (Reg, Reg),
        mut body: impl FnMut(&mut KernelBuilder, Reg, Reg),
    ) {
        let ng = kb.mov(Ty::U32, self.ng);
        let ng = kb.selp(ng, 0u32, given);
        let my_col = kb.add(self.n0, self.q2);
        for (j, racc) in st.raccs.iter().enumerate() {
            let r0 = self.slice_row(kb, j);
            let row0 = kb.add(r0, self.g);
            for (nt, f) in racc.frags.iter().enumerate() {
                for (e, &x) in f.iter().enumerate() {
                    let row = kb.add(row0, 8 * (e as u32 >> 1));
                    let col = kb.add(my_col, 8 * nt as u32 + (e as u32 & 1));
                    let row_in = kb.setp(Cmp::Lt, row, self.pg);
                    let limit = kb.selp(ng, 0u32, row_in);
                    let ok = kb.setp(Cmp::Lt, col, limit);
                    let idx = if self.role.transposed() {
                        kb.mad_lo(col, self.state_v, row)
                    } else {
                        kb.mad_lo(row, self.state_v, col)
                    };
                    let off = kb.mul_wide(idx, 4u32);
                    let gat = kb.add(at, off);
                    kb.guarded(ok, false, |kb| body(kb, x, gat));
                }
            }
        }
    }

    /// S̃ ← S rounded and the rest ← S − S̃ rounded (warps holding state rows).
    pub(super) fn store_rh(&self, kb: &mut KernelBuilder, st: &TcState) {
        let skip = warp_role(kb, self.warp, self.pd / 16, WARPS);
        for (j, racc) in st.raccs.iter().enumerate() {
            let r0 = self.slice_row(kb, j);
            let (g, q4) = (self.g, self.q4);
            self.lay
                .rh
                .store_acc(kb, self.base, racc, self.ab, r0, g, q4, 0);
            let rest = racc.rounding_rest(kb, self.ab);
            self.lay
                .rl
                .store_acc(kb, self.base, &rest, self.ab, r0, g, q4, 0);
        }
        if let Some(skip) = skip {
            kb.place(skip);
        }
    }

    /// dv: dH0 = S when asked for, and dlg = T ⟨H0, dH0⟩ over the lane's elements.
    pub(super) fn finish_dv(
        &self,
        kb: &mut KernelBuilder,
        st: &TcState,
        (dh0, h0): (&crate::dsl::ParamRef, &crate::dsl::ParamRef),
        (dlg, seq_len): (Reg, Reg),
    ) {
        let skip = kb.label();
        if self.pd / 16 < WARPS {
            let idle = kb.setp(Cmp::Ge, self.warp, self.pd / 16);
            kb.bra_if(idle, false, skip);
        }
        let at = self.state_ptr(kb, dh0);
        self.state_elems(kb, st, at, |kb, x, gat| {
            kb.st(Space::Global, Address::reg(gat, 0), x);
        });
        let at = self.state_ptr(kb, h0);
        self.state_elems(kb, st, at, |kb, x, gat| {
            let v = kb.ld(Space::Global, Ty::F32, Address::reg(gat, 0));
            kb.fma_into(dlg, x, v, dlg);
        });
        kb.place(skip);
        let tf = kb.cvt(Ty::F32, seq_len, Some(Rounding::Rn));
        let scaled = kb.mul(dlg, tf);
        kb.assign(dlg, scaled);
    }
}
