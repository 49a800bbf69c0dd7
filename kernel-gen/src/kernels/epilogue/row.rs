//! What both epilogue kernels share: the warp's row and the lane's columns of it, masked
//! loads and stores of a whole row in f32, the inverse RMS and the logistic function.

use retention_core::Dtype;

use crate::GenError;
use crate::blocks::cta::warp_row;
use crate::blocks::global::{load_f32_masked, store_from_f32_masked};
use crate::blocks::warp_sum::warp_sum_f32;
use crate::dsl::{Address, Cmp, KernelBuilder, Label, ParamRef, Precision, Reg, Ty};
use crate::spec::KernelSpec;

use super::{param_names, rows_per_cta};

/// log2 e, for e^x = 2^(x·log2 e).
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// A kernel for `spec` with its headers and every parameter of [`param_names`] declared in
/// launch order (`p_rows` `.u32`, `p_eps` `.f32`, the tensors `.u64`).
///
/// # Errors
/// [`GenError::Dsl`] when [`param_names`] does not list `N` parameters (a generator bug).
pub(super) fn begin<const N: usize>(
    spec: &KernelSpec,
    what: &str,
    math: &str,
) -> Result<(KernelBuilder, [ParamRef; N]), GenError> {
    let mut kb = KernelBuilder::new(spec.entry(), spec.arch);
    kb.header(format!("gated MSR epilogue, {what}: {}", spec.slug()));
    kb.header(format!("spec: {}", spec.canonical()));
    kb.header(math);
    kb.max_threads(spec.tile.threads);
    let names: [&str; N] = param_names(spec).try_into().map_err(|_| GenError::Dsl {
        kernel: spec.entry(),
        message: format!("param_names does not list the {what}'s {N} parameters"),
    })?;
    let params = kb.params(names, &[("p_rows", Ty::U32), ("p_eps", Ty::F32)]);
    Ok((kb, params))
}

/// What both kernels open with: the warp's row of `p_rows` ([`RowLanes::new`]), eps, this
/// lane's columns of each of `inputs` in f32 (0 past V; `names` names them in a comment),
/// and r = (mean(o²) + eps)^(−1/2) of the first input, o.
pub(super) fn open_row<const N: usize>(
    kb: &mut KernelBuilder,
    spec: &KernelSpec,
    (p_rows, p_eps): (&ParamRef, &ParamRef),
    inputs: [&ParamRef; N],
    names: &str,
) -> (RowLanes, [Vec<Reg>; N], Reg) {
    let row = RowLanes::new(kb, spec, p_rows);
    let eps = kb.ld_param(p_eps);
    kb.comment(format!("{names} of the row, f32 (0 past V)"));
    let loaded = inputs.map(|p| row.load(kb, p));
    kb.comment("r = (mean(o^2) + eps)^(-1/2), 0 for an all-zero row with eps = 0");
    let r = row.inv_rms(kb, &loaded[0], eps);
    (row, loaded, r)
}

/// One warp's row of every `[rows, V]` tensor, and this lane's columns of it.
pub(super) struct RowLanes {
    dtype: Dtype,
    /// Row length V.
    v: u32,
    /// Columns per lane per group (w).
    width: u32,
    /// Byte offset of this lane's first column from a tensor's start (row and lane).
    offset: Reg, // .u64
    /// First column of this lane in each group (.u32).
    cols: Vec<Reg>,
    /// Where the warps past the last row jump to ([`Self::close`] places it).
    done: Label,
}

/// Columns per lane per access: 4 when 4 | V (one vector access), else 2 when 2 | V, else 4
/// by scalar accesses.
fn lane_width(v: u32) -> u32 {
    if v.is_multiple_of(4) || !v.is_multiple_of(2) {
        4
    } else {
        2
    }
}

impl RowLanes {
    /// Row `ctaid.x · warps + warp` of `rows` (`p_rows`); warps past the last row branch to
    /// [`Self::done`] (a whole warp at once: every lane of it shares the row).
    pub fn new(kb: &mut KernelBuilder, spec: &KernelSpec, p_rows: &ParamRef) -> Self {
        let (v, dtype) = (spec.v, spec.dtype);
        let width = lane_width(v);
        let groups = v.div_ceil(32 * width);
        let (row, lane, done) = warp_row(kb, rows_per_cta(spec), p_rows, "(token, head) row");
        let es = dtype.size_bytes() as u32;
        let row_bytes = kb.mul_wide(row, v * es);
        let lane_bytes = kb.mul_wide(lane, width * es);
        let offset = kb.add(row_bytes, lane_bytes);
        let first = kb.mul_lo(lane, width);
        let cols = (0..groups).map(|j| kb.add(first, 32 * width * j)).collect();
        Self {
            dtype,
            v,
            width,
            offset,
            cols,
            done,
        }
    }

    /// This lane's address in the tensor `p`, and the byte stride between its groups.
    fn lane_address(&self, kb: &mut KernelBuilder, p: &ParamRef) -> (Reg, i64) {
        let base = kb.global_ptr(p);
        let at = kb.add(base, self.offset);
        let stride = 32 * self.width * self.dtype.size_bytes() as u32;
        (at, i64::from(stride))
    }

    /// This lane's columns of the row of `p`, widened to f32 (0 past V), group by group.
    pub fn load(&self, kb: &mut KernelBuilder, p: &ParamRef) -> Vec<Reg> {
        let (at, stride) = self.lane_address(kb, p);
        let n = self.width as usize;
        let mut out = Vec::with_capacity(self.cols.len() * n);
        for (j, &col) in self.cols.iter().enumerate() {
            let addr = Address::reg(at, j as i64 * stride);
            out.extend(load_f32_masked(
                kb,
                (self.dtype, n),
                addr,
                col,
                self.v,
                self.v,
            ));
        }
        out
    }

    /// Round `xs` (as [`Self::load`] lays them out) to the dtype and store the columns
    /// inside V into the row of `p`.
    pub fn store(&self, kb: &mut KernelBuilder, p: &ParamRef, xs: &[Reg]) {
        let (at, stride) = self.lane_address(kb, p);
        let n = self.width as usize;
        for ((j, &col), group) in self.cols.iter().enumerate().zip(xs.chunks(n)) {
            let addr = Address::reg(at, j as i64 * stride);
            store_from_f32_masked(kb, self.dtype, addr, group, col, self.v, self.v);
        }
    }

    /// r = (Σ o² / V + eps)^(−1/2), correctly rounded steps (sqrt.rn, div.rn); 0 where
    /// Σ o² / V + eps is not positive (an all-zero row with eps = 0), as the reference.
    pub fn inv_rms(&self, kb: &mut KernelBuilder, o: &[Reg], eps: Reg) -> Reg {
        let sum_sq = row_dot(kb, o, o);
        let mean = kb.div(sum_sq, self.v as f32);
        let ms = kb.add(mean, eps);
        let denom = kb.sqrt(ms, Precision::Rn);
        let inv = kb.div(1.0f32, denom);
        let positive = kb.setp(Cmp::Gt, ms, 0.0f32);
        kb.selp(inv, 0.0f32, positive)
    }

    /// End the kernel: the warps past the last row land here, then every warp returns.
    ///
    /// # Errors
    /// [`GenError::Dsl`] on a generator bug ([`KernelBuilder::finish`]).
    pub fn close(self, mut kb: KernelBuilder) -> Result<crate::dsl::Kernel, GenError> {
        kb.place(self.done);
        kb.ret();
        kb.finish()
    }

    /// mean over the row (V entries) of a row sum.
    pub fn mean(&self, kb: &mut KernelBuilder, sum: Reg) -> Reg {
        kb.div(sum, self.v as f32)
    }
}

/// σ(g) = 1 / (1 + 2^(−g·log2 e)) in f32 (`ex2.approx`, `rcp.approx`: a few ulp, far inside
/// the f32 tolerance): 0 for g far below 0 (2^x overflows to +inf), 1 far above.
pub(super) fn sigmoid(kb: &mut KernelBuilder, g: Reg) -> Reg {
    let x = kb.mul(g, -LOG2_E);
    let e = kb.ex2(x, true);
    let d = kb.add(e, 1.0f32);
    kb.rcp(d, Precision::Approx)
}

/// Σ over a warp's row of `a ⊙ b` (this lane's part, then the warp's), in every lane.
pub(super) fn row_dot(kb: &mut KernelBuilder, a: &[Reg], b: &[Reg]) -> Reg {
    let acc = kb.mov(Ty::F32, 0.0f32);
    for (&x, &y) in a.iter().zip(b) {
        kb.fma_into(acc, x, y, acc);
    }
    warp_sum_f32(kb, acc)
}
