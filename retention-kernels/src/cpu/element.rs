//! The input dtypes the CPU kernels accept, with bulk conversions to and from the f32 they
//! compute in (DESIGN §1: state and every accumulator f32, whatever the input dtype).

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use retention_core::Element;

/// An input/output element type of the CPU kernels: f32, f16 or bf16.
///
/// Conversions work on whole rows so the 16-bit ones can use the vector paths of `half`
/// (F16C for f16); narrowing rounds to nearest even.
pub trait CpuElement: Element {
    /// Widen `src` into `dst` (equal lengths).
    fn load_f32(src: &[Self], dst: &mut [f32]);
    /// Narrow `src` into `dst` (equal lengths).
    fn store_f32(src: &[f32], dst: &mut [Self]);
}

impl CpuElement for f32 {
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl CpuElement for f16 {
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

impl CpuElement for bf16 {
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// The same row viewed as f32 without copying, when `T` is f32 (`None` for 16-bit types).
pub(crate) fn as_f32<T: CpuElement>(src: &[T]) -> Option<&[f32]> {
    if T::DTYPE == Some(retention_core::Dtype::F32) {
        bytemuck::try_cast_slice(src).ok()
    } else {
        None
    }
}
