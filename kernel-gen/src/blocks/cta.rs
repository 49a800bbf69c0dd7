//! CTA, warp and lane coordinates every kernel opens with (ARCHITECTURE §3, building blocks),
//! and the 16-bit operand types of a dtype's tensor-core products.

use retention_core::Dtype;

use crate::dsl::{Axis, Cmp, KernelBuilder, Label, ParamRef, Reg, Sreg, Ty};

/// `(b, h)` = (`ctaid.x`, `ctaid.y`): the CTA's batch row and head.
pub fn cta_row_head(kb: &mut KernelBuilder) -> (Reg, Reg) {
    let b = kb.sreg(Sreg::Ctaid(Axis::X));
    let h = kb.sreg(Sreg::Ctaid(Axis::Y));
    (b, h)
}

/// `(b, h, t)`: [`cta_row_head`] and the thread index `tid.x`.
pub fn cta_row_head_thread(kb: &mut KernelBuilder) -> (Reg, Reg, Reg) {
    let (b, h) = cta_row_head(kb);
    let t = kb.sreg(Sreg::Tid(Axis::X));
    (b, h, t)
}

/// A thread's warp coordinates `(lane, warp, g, q4)`: lane = t mod 32, warp = t / 32, and
/// the `mma` fragment coordinates g = lane / 4 (row group), q4 = lane mod 4 (column pair).
pub fn warp_lane(kb: &mut KernelBuilder, t: Reg) -> (Reg, Reg, Reg, Reg) {
    let lane = kb.and(t, 31u32);
    let warp = kb.shr(t, 5u32);
    let g = kb.shr(lane, 2u32);
    let q4 = kb.and(lane, 3u32);
    (lane, warp, g, q4)
}

/// One warp per row of a row-major tensor: `(row, lane, done)` with row = `ctaid.x · warps +
/// warp` of `p_rows` rows (`what` names a row in the comment); warps past the last row branch
/// to `done`, which the caller places (a whole warp at once: every lane shares the row).
pub fn warp_row(
    kb: &mut KernelBuilder,
    warps: u32,
    p_rows: &ParamRef,
    what: &str,
) -> (Reg, Reg, Label) {
    kb.comment(format!("one warp per {what}: row = ctaid.x * warps + warp"));
    let t = kb.sreg(Sreg::Tid(Axis::X));
    let cta = kb.sreg(Sreg::Ctaid(Axis::X));
    let warp = kb.shr(t, 5u32);
    let lane = kb.and(t, 31u32);
    let row = kb.mad_lo(cta, warps, warp);
    let rows = kb.ld_param(p_rows);
    let past = kb.setp(Cmp::Ge, row, rows);
    let done = kb.label();
    kb.bra_if(past, false, done);
    (row, lane, done)
}

/// The `mma` operand type of a 16-bit dtype and its packed pair type (f16 for anything that
/// is not bf16).
pub fn mma_types(dtype: Dtype) -> (Ty, Ty) {
    let ab = match dtype {
        Dtype::Bf16 => Ty::Bf16,
        _ => Ty::F16,
    };
    (ab, ab.packed().unwrap_or(Ty::F16x2))
}

/// Branch to a fresh label when `warp >= limit` (a warp-uniform role test); returns the
/// label to place after the role's code, or `None` when every one of `warps` has the role.
pub fn warp_role(kb: &mut KernelBuilder, warp: Reg, limit: u32, warps: u32) -> Option<Label> {
    (limit < warps).then(|| {
        let skip = kb.label();
        let idle = kb.setp(Cmp::Ge, warp, limit);
        kb.bra_if(idle, false, skip);
        skip
    })
}
