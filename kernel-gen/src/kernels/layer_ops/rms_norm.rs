//! RMSNorm with a gain over rows of width d: `y = x · (mean(x²) + eps)^(−1/2) ⊙ gain`, one
//! warp per row (see [`super`] for the mapping).
//!
//! | # | name     | type   | meaning                              |
//! |---|----------|--------|--------------------------------------|
//! | 0 | `p_x`    | `.u64` | x `[rows, d]` in the spec's dtype    |
//! | 1 | `p_gain` | `.u64` | gain `[d]`                           |
//! | 2 | `p_y`    | `.u64` | y `[rows, d]` (written)              |
//! | 3 | `p_rows` | `.u32` | rows                                 |
//! | 4 | `p_eps`  | `.f32` | eps (≥ 0)                            |
//!
//! Traffic per row: 2d elements of x read (the second pass from cache), d of gain, d of y
//! written. The inverse RMS is `1 / sqrt.rn(Σx²/d + eps)` (div.rn), as the CPU kernel;
//! a row whose mean square plus eps is not positive (all zeros, eps = 0) gives 0.

use retention_core::Dtype;

use super::{RMS_NORM_PARAMS, open_kernel, rows_per_cta};
use crate::GenError;
use crate::blocks::cta::warp_row;
use crate::blocks::global::{load_f32_masked, store_from_f32_masked};
use crate::blocks::warp_sum::warp_sum_f32;
use crate::dsl::{Address, Cmp, KernelBuilder, Precision, Reg, Ty};
use crate::spec::KernelSpec;

/// One lane's walk over a row: `width` columns per access, `groups` accesses 32·width
/// columns apart.
struct LaneWalk {
    dtype: Dtype,
    d: u32,
    width: u32,
    /// First column of this lane in each group (.u32).
    cols: Vec<Reg>,
}

impl LaneWalk {
    /// Byte stride between groups.
    fn stride(&self) -> i64 {
        i64::from(32 * self.width * self.dtype.size_bytes() as u32)
    }

    /// This lane's columns of the row at `at`, widened to f32 (0 past d), group by group.
    fn load(&self, kb: &mut KernelBuilder, at: Reg) -> Vec<Vec<Reg>> {
        let n = self.width as usize;
        (self.cols.iter().enumerate())
            .map(|(j, &col)| {
                let addr = Address::reg(at, j as i64 * self.stride());
                load_f32_masked(kb, (self.dtype, n), addr, col, self.d, self.d)
            })
            .collect()
    }
}

/// Emit the kernel for a validated `spec`.
pub(super) fn generate(spec: &KernelSpec) -> Result<crate::dsl::Kernel, GenError> {
    let formula = "y = x / sqrt(mean(x^2) + eps) * gain, per row of width d";
    let scalars = [("p_rows", Ty::U32), ("p_eps", Ty::F32)];
    let (mut kb, params) = open_kernel(
        spec,
        ("RMSNorm with gain", formula),
        RMS_NORM_PARAMS,
        &scalars,
    );
    let [p_x, p_gain, p_y, p_rows, p_eps] = &params;
    let (d, dtype) = (spec.v, spec.dtype);
    let width = if d.is_multiple_of(4) || !d.is_multiple_of(2) {
        4
    } else {
        2
    };
    let (row, lane, done) = warp_row(&mut kb, rows_per_cta(spec), p_rows, "row");
    let es = dtype.size_bytes() as u32;
    let first = kb.mul_lo(lane, width);
    let walk = LaneWalk {
        dtype,
        d,
        width,
        cols: (0..d.div_ceil(32 * width))
            .map(|j| kb.add(first, 32 * width * j))
            .collect(),
    };
    let lane_bytes = kb.mul_wide(lane, width * es);
    let row_bytes = kb.mul_wide(row, d * es);
    let offset = kb.add(row_bytes, lane_bytes);
    let x_base = kb.global_ptr(p_x);
    let x_at = kb.add(x_base, offset);
    kb.comment("pass 1: sum of squares over the row");
    let acc = kb.mov(Ty::F32, 0.0f32);
    for xs in walk.load(&mut kb, x_at) {
        for x in xs {
            kb.fma_into(acc, x, x, acc);
        }
    }
    let sum = warp_sum_f32(&mut kb, acc);
    let mean = kb.div(sum, d as f32);
    let eps = kb.ld_param(p_eps);
    let ms = kb.add(mean, eps);
    let denom = kb.sqrt(ms, Precision::Rn);
    let inv = kb.div(1.0f32, denom);
    let positive = kb.setp(Cmp::Gt, ms, 0.0f32);
    let inv = kb.selp(inv, 0.0f32, positive);
    kb.comment("pass 2: y = x * (inv * gain)");
    let gain_base = kb.global_ptr(p_gain);
    let gain_at = kb.add(gain_base, lane_bytes);
    let y_base = kb.global_ptr(p_y);
    let y_at = kb.add(y_base, offset);
    let xs = walk.load(&mut kb, x_at);
    let gs = walk.load(&mut kb, gain_at);
    for (j, (xg, gg)) in xs.iter().zip(&gs).enumerate() {
        let ys: Vec<Reg> = (xg.iter().zip(gg))
            .map(|(&x, &g)| {
                let s = kb.mul(inv, g);
                kb.mul(x, s)
            })
            .collect();
        let addr = Address::reg(y_at, j as i64 * walk.stride());
        store_from_f32_masked(&mut kb, dtype, addr, &ys, walk.cols[j], d, d);
    }
    kb.place(done);
    kb.ret();
    kb.finish()
}
