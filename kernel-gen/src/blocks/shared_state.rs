//! An f32 state slice `[K][vs]` held in shared memory by the FMA paths (ARCHITECTURE §3,
//! building blocks): stored as K·vs/4 groups of four, group t first, thread t moving the four
//! columns `4(t mod vs/4)..` of rows `t div (vs/4) + j·rows_per_round` to and from a global
//! f32 state of `row_elems` columns (masked past the real K, V when the tile is padded).

use retention_core::Dtype;

use super::global::{load4_f32_masked, state_row_limit, store_from_f32_masked};
use crate::dsl::{Address, Cmp, KernelBuilder, Label, Operand, ParamRef, Reg, Space, Ty};

/// One thread's share of a shared-memory f32 state slice.
pub struct SharedStateRounds {
    /// The thread's first state row.
    pub row: Reg,
    /// Rows between rounds.
    pub rows_per_round: u32,
    /// Global column of the thread's first element.
    pub col: Reg,
    /// Byte offset of the thread's first element in a global `[K][row_elems]` state.
    pub elem_bytes: Reg,
    /// Rounds of 16 bytes per thread.
    pub rounds: u32,
    /// Global bytes between rounds.
    pub global_round: i64,
    /// Threads per CTA.
    threads: u32,
}

impl SharedStateRounds {
    /// Positions of thread `t` of `threads` in a `[kd][vs]` slice whose first global column
    /// is `v_col0`, in a global state of `row_elems` columns.
    pub fn new(
        kb: &mut KernelBuilder,
        t: Reg,
        v_col0: Reg,
        (kd, vs, row_elems): (u32, u32, u32),
        threads: u32,
    ) -> Self {
        let groups = vs / 4;
        let group = kb.and(t, groups - 1);
        let col4 = kb.shl(group, 2u32);
        let row = kb.shr(t, groups.trailing_zeros());
        let rows_per_round = threads / groups;
        let col = kb.add(v_col0, col4);
        let elem = kb.mad_lo(row, row_elems, col);
        let elem_bytes = kb.mul_wide(elem, 4u32);
        SharedStateRounds {
            row,
            rows_per_round,
            col,
            elem_bytes,
            rounds: kd * vs / 4 / threads,
            global_round: i64::from(rows_per_round * row_elems * 4),
            threads,
        }
    }

    /// Shared offset of round `r` of the thread's groups.
    fn round_off(&self, r: u32) -> i64 {
        i64::from(r * self.threads * 16)
    }

    /// Zero the thread's groups at `my_state + off`.
    pub fn zero(&self, kb: &mut KernelBuilder, my_state: Reg, off: i64) {
        for r in 0..self.rounds {
            let z: Operand = 0.0f32.into();
            let at = Address::reg(my_state, self.round_off(r) + off);
            kb.st_vec(Space::Shared, Ty::F32, at, &[z; 4]);
        }
    }

    /// Load the thread's groups from the global state at `src` (its element 0) into
    /// `my_state`; `tail` = the real (K, V) when the tile is padded.
    pub fn load(&self, kb: &mut KernelBuilder, src: Reg, my_state: Reg, tail: Option<(u32, u32)>) {
        for r in 0..self.rounds {
            let at = Address::reg(src, i64::from(r) * self.global_round);
            let x = match tail {
                Some(dims) => {
                    let limit = state_row_limit(kb, self.row, r * self.rows_per_round, dims);
                    load4_f32_masked(kb, Dtype::F32, at, self.col, limit, dims.1)
                }
                None => kb.ld_vec(Space::Global, Ty::F32, 4, at),
            };
            let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
            let dst = Address::reg(my_state, self.round_off(r));
            kb.st_vec(Space::Shared, Ty::F32, dst, &x);
        }
    }

    /// `R = H0[b,h]` when the pointer parameter `p_h0` is non-zero, else 0; `state_bytes` is
    /// the thread's element 0 of the (row, head)'s state.
    pub fn load_or_zero(
        &self,
        kb: &mut KernelBuilder,
        p_h0: &ParamRef,
        state_bytes: Reg,
        my_state: Reg,
        tail: Option<(u32, u32)>,
    ) {
        let h0_raw = kb.ld_param(p_h0);
        let has_h0 = kb.setp(Cmp::Ne, h0_raw, 0u64);
        let (zero_state, state_ready) = (kb.label(), kb.label());
        kb.bra_if(has_h0, true, zero_state);
        let h0 = kb.global_ptr(p_h0);
        let h0_bh = kb.add(h0, state_bytes);
        self.load(kb, h0_bh, my_state, tail);
        kb.bra_uni(state_ready);
        kb.place(zero_state);
        self.zero(kb, my_state, 0);
        kb.place(state_ready);
    }

    /// Store the thread's groups at `my_state + off` to the global state at `dst`.
    pub fn store(
        &self,
        kb: &mut KernelBuilder,
        (my_state, off): (Reg, i64),
        dst: Reg,
        tail: Option<(u32, u32)>,
    ) {
        for r in 0..self.rounds {
            let src = Address::reg(my_state, self.round_off(r) + off);
            let x = kb.ld_vec(Space::Shared, Ty::F32, 4, src);
            let at = Address::reg(dst, i64::from(r) * self.global_round);
            if let Some(dims) = tail {
                let limit = state_row_limit(kb, self.row, r * self.rows_per_round, dims);
                store_from_f32_masked(kb, Dtype::F32, at, &x, self.col, limit, dims.1);
            } else {
                let x: Vec<Operand> = x.into_iter().map(Into::into).collect();
                kb.st_vec(Space::Global, Ty::F32, at, &x);
            }
        }
    }

    /// `H_T[b,h] = R` when the pointer parameter `p_ht` is non-zero; `skip(kb, done)` may
    /// branch past the store (for example, all but a sequence's last segment).
    pub fn store_to_param(
        &self,
        kb: &mut KernelBuilder,
        (p_ht, state_bytes): (&ParamRef, Reg),
        my_state: Reg,
        tail: Option<(u32, u32)>,
        skip: impl FnOnce(&mut KernelBuilder, Label),
    ) {
        kb.comment("H_T[b,h] = R when asked for");
        let ht_raw = kb.ld_param(p_ht);
        let has_ht = kb.setp(Cmp::Ne, ht_raw, 0u64);
        let done = kb.label();
        kb.bra_if(has_ht, true, done);
        skip(kb, done);
        let ht = kb.global_ptr(p_ht);
        let ht_bh = kb.add(ht, state_bytes);
        self.store(kb, (my_state, 0), ht_bh, tail);
        kb.place(done);
    }
}
