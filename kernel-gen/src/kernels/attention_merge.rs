//! The end of the attention split pass ([`super::attention_decode`]): the lane groups of a
//! warp merge their running softmax states (m, l, õ) by butterfly shuffles, group 0 of each
//! warp writes its state to shared memory (`s_ml` [warps, 2], `s_acc` [warps, V'] with zeros
//! in columns V..V'), and thread t < V'/4 merges the warps' columns 4t..4t+4: with one split
//! it writes o = õ / l in the output dtype (columns past V predicated off), with several the
//! split's partial row (m, l, 0, 0, õ[V']) for the combine. Shared traffic: one write and
//! one read of each warp's state; global: o once, or one partial row per split.

use super::attention_layout::{LaneLayout, store_columns};
use super::attention_spec::{PARTIAL_HEADER, padded_v, partial_row_floats};
use crate::dsl::{
    Address, Cmp, KernelBuilder, Label, ParamRef, Reg, SharedRef, ShflMode, Space, Ty,
};
use crate::spec::KernelSpec;

/// A lane group's running softmax state: max m (log2 units), Σ 2^(s−m), Σ 2^(s−m)·v.
pub(super) struct Running {
    /// Running max (log2 units).
    pub(super) m: Reg,
    /// Σ 2^(s−m).
    pub(super) l: Reg,
    /// Σ 2^(s−m)·v over the lane's value elements.
    pub(super) acc: Vec<Reg>,
}

impl Running {
    /// Fold in the state (m2, l2, acc2) of another part of the context.
    pub(super) fn merge(&self, kb: &mut KernelBuilder, m2: Reg, l2: Reg, acc2: &[Reg]) {
        let m = kb.max(self.m, m2);
        let a = kb.sub(self.m, m);
        let a = kb.ex2(a, true);
        let b = kb.sub(m2, m);
        let b = kb.ex2(b, true);
        let l = kb.mul(self.l, a);
        kb.fma_into(self.l, l2, b, l);
        for (&x, &y) in self.acc.iter().zip(acc2) {
            let xa = kb.mul(x, a);
            kb.fma_into(x, y, b, xa);
        }
        kb.assign(self.m, m);
    }
}

/// The registers and handles the merge reads.
pub(super) struct MergeIn<'a> {
    /// Thread index.
    pub(super) t: Reg,
    /// (warp, lane group r within the warp, lane j within the group).
    pub(super) lane: (Reg, Reg, Reg),
    /// Whether this lane holds the value row's last piece (rows that do not fill the group).
    pub(super) v_tail: Option<Reg>,
    /// `s_ml` and `s_acc`.
    pub(super) shared: (&'a SharedRef, &'a SharedRef),
    /// (split index, splits, n·H + h).
    pub(super) grid: (Reg, Reg, Reg),
    /// `p_o` and `p_partial`.
    pub(super) out: (&'a ParamRef, &'a ParamRef),
}

/// Merge the CTA's running states and write o or the split's partial row. Returns the label
/// the caller places before `ret` (threads without columns jump there).
pub(super) fn merge_and_write(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    lay: LaneLayout,
    run: &Running,
    m_in: &MergeIn,
) -> Label {
    let (vd, vp) = (spec.v, padded_v(spec.v));
    let (threads, group) = (spec.tile.threads, lay.group);
    let warps = threads / 32;
    let esize = spec.dtype.size_bytes() as u32;
    let t = m_in.t;
    let (warp, r, j) = m_in.lane;
    let v_tail = m_in.v_tail;
    let (s_ml, s_acc) = m_in.shared;
    let (split, splits, nh) = m_in.grid;
    let (p_o, p_partial) = m_in.out;
    kb.comment("merge the lane groups of a warp (same columns, lanes G apart)");
    let mut off = group;
    while off < 32 {
        let shfl = |kb: &mut KernelBuilder, x: Reg| {
            kb.warp_shfl(ShflMode::Bfly, x, off, 0x1fu32, u32::MAX)
        };
        let m2 = shfl(kb, run.m);
        let l2 = shfl(kb, run.l);
        let acc2: Vec<Reg> = run.acc.iter().map(|&a| shfl(kb, a)).collect();
        run.merge(kb, m2, l2, &acc2);
        off *= 2;
    }

    kb.comment("group 0 of each warp writes its (m, l) and o~ to shared memory");
    let ml_addr = kb.shared_addr(s_ml);
    let acc_addr = kb.shared_addr(s_acc);
    let written = kb.label();
    let not_group0 = kb.setp(Cmp::Ne, r, 0u32);
    kb.bra_if(not_group0, false, written);
    let warp_acc = kb.mad_lo(warp, vp * 4, acc_addr);
    let jv = kb.mul_lo(j, lay.v.piece_elems() * 4);
    let my_acc = kb.add(warp_acc, jv);
    let epp = lay.v.piece_elems();
    for i in 0..lay.v.pieces {
        let mut c = 0;
        while c < epp {
            let n_vec = (epp - c).min(4);
            let vals: Vec<_> = run.acc[(i * epp + c) as usize..(i * epp + c + n_vec) as usize]
                .iter()
                .map(|&x| x.into())
                .collect();
            let at = Address::reg(my_acc, i64::from((i * group * epp + c) * 4));
            match v_tail.filter(|_| lay.v.masked(i)) {
                // Only the lanes holding the last piece: the others' columns are past V.
                Some(ok) => kb.guarded(ok, false, |kb| {
                    kb.st_vec(Space::Shared, Ty::F32, at, &vals);
                }),
                None => kb.st_vec(Space::Shared, Ty::F32, at, &vals),
            }
            c += n_vec;
        }
    }
    let lane0 = kb.setp(Cmp::Eq, j, 0u32);
    let warp8 = kb.shl(warp, 3u32);
    let my_ml = kb.add(ml_addr, warp8);
    kb.guarded(lane0, false, |kb| {
        kb.st_vec(
            Space::Shared,
            Ty::F32,
            Address::reg(my_ml, 0),
            &[run.m.into(), run.l.into()],
        );
        // Columns V..V rounded up to 4 of the warp's row: zeros, read by the merge below.
        for col in vd..vp {
            kb.st(
                Space::Shared,
                Address::reg(warp_acc, i64::from(col * 4)),
                0.0f32,
            );
        }
    });
    kb.place(written);
    kb.bar_sync(0);

    kb.comment("merge the warps: thread t < V/4 owns columns 4t..4t+4");
    let done = kb.label();
    if threads > vp / 4 {
        let outside = kb.setp(Cmp::Ge, t, vp / 4);
        kb.bra_if(outside, false, done);
    }
    let t16 = kb.shl(t, 4u32);
    let col_acc = kb.add(acc_addr, t16);
    let mls: Vec<Vec<Reg>> = (0..warps)
        .map(|w| {
            kb.ld_vec(
                Space::Shared,
                Ty::F32,
                2,
                Address::reg(ml_addr, i64::from(w * 8)),
            )
        })
        .collect();
    let mut big_m = mls[0][0];
    for ml in &mls[1..] {
        big_m = kb.max(big_m, ml[0]);
    }
    let mut l_sum: Option<Reg> = None;
    let mut o4: Vec<Reg> = Vec::new();
    for (w, ml) in mls.iter().enumerate() {
        let d = kb.sub(ml[0], big_m);
        let e = kb.ex2(d, true);
        let part = kb.ld_vec(
            Space::Shared,
            Ty::F32,
            4,
            Address::reg(col_acc, (w as u32 * vp * 4).into()),
        );
        match l_sum {
            None => {
                l_sum = Some(kb.mul(ml[1], e));
                o4 = part.iter().map(|&x| kb.mul(x, e)).collect();
            }
            Some(l) => {
                l_sum = Some(kb.fma(ml[1], e, l));
                o4 = part
                    .iter()
                    .zip(&o4)
                    .map(|(&x, &o)| kb.fma(x, e, o))
                    .collect();
            }
        }
    }
    let l_sum = l_sum.unwrap_or(run.l);

    let one_split = kb.setp(Cmp::Eq, splits, 1u32);
    let write_partial = kb.label();
    kb.bra_if(one_split, true, write_partial);
    kb.comment("one split: o = o~ / l in the output dtype");
    let inv = kb.div(1.0f32, l_sum);
    let o_vals: Vec<Reg> = o4.iter().map(|&x| kb.mul(x, inv)).collect();
    let o = kb.global_ptr(p_o);
    let o_row = kb.mad_wide(nh, vd * esize, o);
    let o_col = kb.mul_wide(t, 4 * esize);
    let o_at = kb.add(o_row, o_col);
    let c0 = |kb: &mut KernelBuilder| kb.shl(t, 2u32);
    let o_at = Address::reg(o_at, 0);
    store_columns(kb, spec.dtype, o_at, &o_vals, c0, (vd, false));
    kb.bra_uni(done);

    kb.place(write_partial);
    kb.comment("several splits: the partial row (m, l, 0, 0, o~[V]) of this split");
    let part_row = kb.mad_lo(nh, splits, split);
    let partial = kb.global_ptr(p_partial);
    let g_part = kb.mad_wide(part_row, partial_row_floats(spec) * 4, partial);
    let t16_wide = kb.mul_wide(t, 16u32);
    let g_col = kb.add(g_part, t16_wide);
    let vals: Vec<_> = o4.iter().map(|&x| x.into()).collect();
    kb.st_vec(
        Space::Global,
        Ty::F32,
        Address::reg(g_col, i64::from(PARTIAL_HEADER * 4)),
        &vals,
    );
    let t0 = kb.setp(Cmp::Eq, t, 0u32);
    kb.guarded(t0, false, |kb| {
        kb.st_vec(
            Space::Global,
            Ty::F32,
            Address::reg(g_part, 0),
            &[big_m.into(), l_sum.into()],
        );
    });
    done
}
