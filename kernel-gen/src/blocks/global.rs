//! Global memory views and element conversions: a token-major tensor's rows, vector loads
//! widened to f32, vector stores rounded from f32. No spec knowledge beyond the dtype.

use retention_core::Dtype;

use crate::dsl::{Address, Cmp, KernelBuilder, Operand, Reg, Rounding, Space, Ty};

/// The DSL type of one element of `dtype`.
pub fn elem_ty(dtype: Dtype) -> Ty {
    match dtype {
        Dtype::F32 => Ty::F32,
        Dtype::F16 => Ty::F16,
        Dtype::Bf16 => Ty::Bf16,
    }
}

/// Load four consecutive elements of `dtype` in one access and widen them to f32.
pub fn load4_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address) -> Vec<Reg> {
    let ty = elem_ty(dtype);
    let raw = kb.ld_vec(Space::Global, ty, 4, addr);
    if ty == Ty::F32 {
        raw
    } else {
        raw.into_iter().map(|x| kb.cvt(Ty::F32, x, None)).collect()
    }
}

/// Round four (or two) f32 to `dtype` and store them in one access.
pub fn store4_from_f32(kb: &mut KernelBuilder, dtype: Dtype, addr: Address, xs: &[Reg]) {
    let ty = elem_ty(dtype);
    let vals: Vec<Operand> = if ty == Ty::F32 {
        xs.iter().map(|&x| x.into()).collect()
    } else {
        xs.iter()
            .map(|&x| kb.cvt(ty, x, Some(Rounding::Rn)).into())
            .collect()
    };
    kb.st_vec(Space::Global, ty, addr, &vals);
}

/// Where a chunk's rows of one token-major tensor are in global memory.
#[derive(Clone, Copy)]
pub struct GlobalRows {
    /// Address of token 0, head 0 at the tile's first column.
    pub src: Reg,
    /// Bytes of one (token, head) row of the tensor.
    pub row_bytes: u32,
    /// First token of the chunk.
    pub tok_c: Reg,
    /// H.
    pub heads: Reg,
    /// This CTA's head.
    pub h: Reg,
    /// Rows in the chunk (L).
    pub len: Reg,
}

/// `n` f32 registers set to 0, for masked loads to fill.
fn zeros_then(kb: &mut KernelBuilder, n: usize) -> Vec<Reg> {
    (0..n).map(|_| kb.mov(Ty::F32, 0.0f32)).collect()
}

/// The valid columns of a row: `dim` where `inside` (a predicate) holds, else 0 — the limit
/// [`load4_f32_masked`] and [`store_from_f32_masked`] take for a row that may lie past a
/// tensor's end (a partial chunk's rows, a padded tile's rows).
pub fn row_limit(kb: &mut KernelBuilder, inside: Reg, dim: u32) -> Reg {
    let full = kb.mov(Ty::U32, dim);
    kb.selp(full, 0u32, inside)
}

/// Load the four elements at columns `col..col+4` of a global row whose first `limit`
/// columns exist (a `.u32` register or immediate) and widen them to f32; missing columns
/// read as 0 and are never touched. `dim` is the row's length in elements: when it is a
/// multiple of 4 the four columns are all in or all out and 4-element aligned (row starts
/// are `dim·elem` bytes apart, `col` a multiple of 4), so one guarded vector access serves;
/// otherwise each element is a guarded scalar access (any `dim`, any alignment).
pub fn load4_f32_masked(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    addr: Address,
    col: Reg,
    limit: impl Into<Operand>,
    dim: u32,
) -> Vec<Reg> {
    load_f32_masked(kb, (dtype, 4), addr, col, limit, dim)
}

/// [`load4_f32_masked`] for `n` (2 or 4) consecutive elements: one guarded vector access
/// when `dim` is a multiple of `n`, else guarded scalar accesses.
pub fn load_f32_masked(
    kb: &mut KernelBuilder,
    (dtype, n): (Dtype, usize),
    addr: Address,
    col: Reg,
    limit: impl Into<Operand>,
    dim: u32,
) -> Vec<Reg> {
    let limit = limit.into();
    let out = zeros_then(kb, n);
    if dim.is_multiple_of(n as u32) {
        let ok = kb.setp(Cmp::Lt, col, limit);
        kb.guarded(ok, false, |kb| {
            let ty = elem_ty(dtype);
            let raw = kb.ld_vec(Space::Global, ty, n, addr);
            for (&o, x) in out.iter().zip(raw) {
                let x = to_f32(kb, ty, x);
                kb.assign(o, x);
            }
        });
    } else {
        let ty = elem_ty(dtype);
        each_masked(kb, (dtype, &addr), out.len(), (col, limit), |kb, e, at| {
            let x = kb.ld(Space::Global, ty, at);
            let x = to_f32(kb, ty, x);
            kb.assign(out[e], x);
        });
    }
    out
}

/// Round f32 values (2 or 4) to `dtype` and store them at columns `col..` of a global row
/// whose first `limit` columns exist; stores of missing columns are skipped. One vector
/// access when `dim` is a multiple of their count, else scalar accesses (as
/// [`load_f32_masked`]).
pub fn store_from_f32_masked(
    kb: &mut KernelBuilder,
    dtype: Dtype,
    addr: Address,
    xs: &[Reg],
    col: Reg,
    limit: impl Into<Operand>,
    dim: u32,
) {
    let limit = limit.into();
    if dim.is_multiple_of(xs.len() as u32) {
        let ok = kb.setp(Cmp::Lt, col, limit);
        kb.guarded(ok, false, |kb| store4_from_f32(kb, dtype, addr, xs));
    } else {
        let ty = elem_ty(dtype);
        each_masked(kb, (dtype, &addr), xs.len(), (col, limit), |kb, e, at| {
            let v: Operand = if ty == Ty::F32 {
                xs[e].into()
            } else {
                kb.cvt(ty, xs[e], Some(Rounding::Rn)).into()
            };
            kb.st_vec(Space::Global, ty, at, &[v]);
        });
    }
}

/// `x` as f32: itself when `ty` is f32, else converted (exact: a 16-bit float widens).
fn to_f32(kb: &mut KernelBuilder, ty: Ty, x: Reg) -> Reg {
    if ty == Ty::F32 {
        x
    } else {
        kb.cvt(Ty::F32, x, None)
    }
}

/// For each element `e < n` of a row at `addr` whose column `col + e` is below `limit`, run
/// `body(kb, e, address of element e)` under that guard (the scalar path of the masked
/// loads and stores).
fn each_masked(
    kb: &mut KernelBuilder,
    (dtype, addr): (Dtype, &Address),
    n: usize,
    (col, limit): (Reg, Operand),
    mut body: impl FnMut(&mut KernelBuilder, usize, Address),
) {
    let es = i64::from(dtype.size_bytes() as u32);
    for e in 0..n {
        let ce = kb.add(col, e as u32);
        let ok = kb.setp(Cmp::Lt, ce, limit);
        let at = Address {
            offset: addr.offset + e as i64 * es,
            ..addr.clone()
        };
        kb.guarded(ok, false, |kb| body(kb, e, at));
    }
}

/// The valid columns of row `first_row + rows_ahead` (`first_row` a `.u32` register) of a
/// `[K][V]` state slice stored `(k, v)` = (rows, columns) in global memory: `v` for rows
/// below `k`, 0 past them (a state tile padded past K).
pub fn state_row_limit(
    kb: &mut KernelBuilder,
    first_row: Reg,
    rows_ahead: u32,
    (k, v): (u32, u32),
) -> Reg {
    let row = kb.add(first_row, rows_ahead);
    let inside = kb.setp(Cmp::Lt, row, k);
    row_limit(kb, inside, v)
}
