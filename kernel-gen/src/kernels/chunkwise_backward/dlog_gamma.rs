//! d log γ in the chunkwise backward's kernels, from the gradients they already hold in f32.
//! With q̃_t = γ^(t−T+1) q_t and k̃_m = γ^(T−1−m) k_m, the forward reads γ only through them
//! and through γ^T H0 in the final state and γ^(t+1) H0 in o_t (ARCHITECTURE §7), so
//!
//! ```text
//! d log γ = Σ_t (t − T + 1) ⟨q_t, dq_t⟩ − Σ_t (t − T + 1) ⟨k_t, dk_t⟩ + T ⟨H0, dH0⟩
//! ```
//!
//! per (row, head): the dq kernel adds the first sum, the dk kernel the second, the dv kernel
//! the third. Each thread accumulates its terms in f32 and writes one partial to the
//! workspace `p_dlog_gamma`, f32 `[B, H, slices, 256]` per kernel (0: not asked); the caller
//! sums the three workspaces per head in f64.

use retention_core::Dtype;

use super::THREADS;
use crate::blocks::global::load4_f32_masked;
use crate::dsl::{Address, Axis, Cmp, KernelBuilder, ParamRef, Reg, Rounding, Space, Sreg, Ty};

/// `dlg += sign · weight · ⟨own, grad⟩` for one row of four columns of a piece: `own` read
/// at `own_at` (a global row whose first `limit` columns exist, `col` the first column's
/// index, `dim` the row length), `grad` the f32 gradient the kernel computed.
#[allow(clippy::too_many_arguments)]
pub fn add_row(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    dlg: Reg,
    weight: Reg,
    (own_at, col, limit, dim): (Reg, Reg, Reg, u32),
    grad: &[Reg; 4],
    negate: bool,
) {
    let own = load4_f32_masked(kb, dtype, Address::reg(own_at, 0), col, limit, dim);
    let mut dot = kb.mul(own[0], grad[0]);
    for e in 1..4 {
        dot = kb.fma(own[e], grad[e], dot);
    }
    let w = if negate { kb.neg(weight) } else { weight };
    kb.fma_into(dlg, w, dot, dlg);
}

/// The weight t − T + 1 (≤ 0, exact in f32 below 2^24 tokens) of sequence position `pos`
/// (`.u32`), given `t_last` = T − 1 as f32.
pub fn weight(kb: &mut KernelBuilder, pos: Reg, t_last: Reg) -> Reg {
    let p = kb.cvt(Ty::F32, pos, Some(Rounding::Rn));
    kb.sub(p, t_last)
}

/// Write the thread's partial `dlg` to `param`'s `[B, H, slices, 256]` workspace unless the
/// pointer is 0.
pub fn store_partial(kb: &mut KernelBuilder, param: &ParamRef, dlg: Reg, slices: u32) {
    let raw = kb.ld_param(param);
    let asked = kb.setp(Cmp::Ne, raw, 0u64);
    kb.guarded(asked, false, |kb| {
        let b = kb.sreg(Sreg::Ctaid(Axis::X));
        let h = kb.sreg(Sreg::Ctaid(Axis::Y));
        let z = kb.sreg(Sreg::Ctaid(Axis::Z));
        let heads = kb.sreg(Sreg::Nctaid(Axis::Y));
        let t = kb.sreg(Sreg::Tid(Axis::X));
        let bh = kb.mad_lo(b, heads, h);
        let cta = kb.mad_lo(bh, slices, z);
        let at = kb.mad_lo(cta, THREADS, t);
        let off = kb.mul_wide(at, 4u32);
        let ws = kb.global_ptr(param);
        let ws = kb.add(ws, off);
        kb.st(Space::Global, Address::reg(ws, 0), dlg);
    });
}
