//! The epilogue backward: do and dg from dy per (token, head) row (see [`super`] for the
//! math and the mapping). r is recomputed from o (one warp sum), so the forward saves nothing.
//!
//! | # | name     | type   | meaning                                   |
//! |---|----------|--------|-------------------------------------------|
//! | 0 | `p_o`    | `.u64` | o `[rows, V]` in the spec's dtype         |
//! | 1 | `p_g`    | `.u64` | g `[rows, V]` (the gate)                  |
//! | 2 | `p_dy`   | `.u64` | dy `[rows, V]` (upstream gradient)        |
//! | 3 | `p_do`   | `.u64` | do `[rows, V]` (written)                  |
//! | 4 | `p_dg`   | `.u64` | dg `[rows, V]` (written)                  |
//! | 5 | `p_rows` | `.u32` | rows = B·T·H                              |
//! | 6 | `p_eps`  | `.f32` | the RMSNorm eps (≥ 0)                     |
//!
//! Traffic per row: V elements of o, g and dy read, V of do and dg written (the minimum).

use super::row::{begin, open_row, row_dot, sigmoid};
use crate::GenError;
use crate::dsl::Reg;
use crate::spec::KernelSpec;

/// Emit the backward kernel for a validated `spec`.
pub(super) fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let (mut kb, [p_o, p_g, p_dy, p_do, p_dg, p_rows, p_eps]) = begin(
        spec,
        "backward",
        "dg = dy n sigmoid(g)(1 + g(1 - sigmoid(g))), do = r(dn - n mean(dn n)), dn = dy swish(g)",
    )?;
    let inputs = [&p_o, &p_g, &p_dy];
    let (row, [o, g, dy], r) = open_row(&mut kb, spec, (&p_rows, &p_eps), inputs, "o, g and dy");
    kb.comment("n = r o; dg = dy n sigmoid(g)(1 + g(1 - sigmoid(g))); dn = dy g sigmoid(g)");
    let mut n = Vec::with_capacity(o.len());
    let mut dn = Vec::with_capacity(o.len());
    let mut dg = Vec::with_capacity(o.len());
    for ((&oi, &gi), &dyi) in o.iter().zip(&g).zip(&dy) {
        let sig = sigmoid(&mut kb, gi);
        let ni = kb.mul(oi, r);
        let one_minus = kb.sub(1.0f32, sig);
        let slope = kb.fma(gi, one_minus, 1.0f32);
        let dyn_ = kb.mul(dyi, ni);
        let dsig = kb.mul(dyn_, sig);
        dg.push(kb.mul(dsig, slope));
        let swish = kb.mul(gi, sig);
        dn.push(kb.mul(dyi, swish));
        n.push(ni);
    }
    row.store(&mut kb, &p_dg, &dg);
    kb.comment("do = r (dn - n mean(dn n))");
    let dot = row_dot(&mut kb, &dn, &n);
    let m = row.mean(&mut kb, dot);
    let d_o: Vec<Reg> = dn
        .iter()
        .zip(&n)
        .map(|(&dni, &ni)| {
            let nm = kb.mul(ni, m);
            let diff = kb.sub(dni, nm);
            kb.mul(diff, r)
        })
        .collect();
    row.store(&mut kb, &p_do, &d_o);
    row.close(kb)
}
