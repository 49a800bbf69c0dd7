//! Global memory views and element conversions: a token-major tensor's rows, vector loads
//! widened to f32, vector stores rounded from f32. No spec knowledge beyond the dtype.

use retention_core::Dtype;

use crate::dsl::{Address, KernelBuilder, Operand, Reg, Rounding, Space, Ty};

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

/// Round four f32 to `dtype` and store them in one access.
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
