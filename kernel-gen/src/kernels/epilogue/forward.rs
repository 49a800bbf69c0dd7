//! The epilogue forward: y = r·o ⊙ g·σ(g) per (token, head) row (see [`super`] for the math
//! and the mapping).
//!
//! | # | name     | type   | meaning                                   |
//! |---|----------|--------|-------------------------------------------|
//! | 0 | `p_o`    | `.u64` | o `[rows, V]` in the spec's dtype         |
//! | 1 | `p_g`    | `.u64` | g `[rows, V]` (the gate)                  |
//! | 2 | `p_y`    | `.u64` | y `[rows, V]` (written)                   |
//! | 3 | `p_rows` | `.u32` | rows = B·T·H                              |
//! | 4 | `p_eps`  | `.f32` | the RMSNorm eps (≥ 0)                     |
//!
//! Traffic per row: V elements of o and g read, V of y written (the minimum).

use super::row::{begin, open_row, sigmoid};
use crate::GenError;
use crate::spec::KernelSpec;

/// Emit the forward kernel for a validated `spec`.
pub(super) fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let (mut kb, [p_o, p_g, p_y, p_rows, p_eps]) = begin(
        spec,
        "forward",
        "y = o / sqrt(mean(o^2) + eps) * g * sigmoid(g), per (token, head) row",
    )?;
    let (row, [o, g], r) = open_row(&mut kb, spec, (&p_rows, &p_eps), [&p_o, &p_g], "o and g");
    kb.comment("y = (r o) * (g sigmoid(g))");
    let y: Vec<_> = o
        .iter()
        .zip(&g)
        .map(|(&oi, &gi)| {
            let sig = sigmoid(&mut kb, gi);
            let swish = kb.mul(gi, sig);
            let n = kb.mul(oi, r);
            kb.mul(n, swish)
        })
        .collect();
    row.store(&mut kb, &p_y, &y);
    row.close(kb)
}
