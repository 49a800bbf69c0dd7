//! The input dtypes the CPU kernels accept, with bulk conversions to and from the f32 they
//! compute in (ARCHITECTURE §1: state and every accumulator f32, whatever the input dtype).

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use retention_core::Element;

use super::simd;

/// An input/output element type of the CPU kernels: f32, f16 or bf16.
///
/// Conversions work on whole rows so the 16-bit ones can use the vector paths of `half`
/// (F16C for f16); narrowing rounds to nearest even.
pub trait CpuElement: Element {
    /// Widen `src` into `dst` (equal lengths).
    fn load_f32(src: &[Self], dst: &mut [f32]);
    /// Narrow `src` into `dst` (equal lengths).
    fn store_f32(src: &[f32], dst: &mut [Self]);
    /// `Σ a[i]·b[i]` in f32, `b` widened on the fly (equal lengths).
    fn dot_widen(a: &[f32], b: &[Self]) -> f32;
    /// `y ← y + w·x` in f32, `x` widened on the fly (equal lengths).
    fn axpy_widen(y: &mut [f32], w: f32, x: &[Self]);
}

impl CpuElement for f32 {
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn dot_widen(a: &[f32], b: &[Self]) -> f32 {
        simd::dot(a, b)
    }
    fn axpy_widen(y: &mut [f32], w: f32, x: &[Self]) {
        simd::axpy(y, w, x);
    }
}

impl CpuElement for f16 {
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
    fn dot_widen(a: &[f32], b: &[Self]) -> f32 {
        simd::dot_f16(a, b)
    }
    fn axpy_widen(y: &mut [f32], w: f32, x: &[Self]) {
        simd::axpy_f16(y, w, x);
    }
}

impl CpuElement for bf16 {
    // `half` converts bf16 slices one scalar at a time; these branch-free loops vectorise.
    fn load_f32(src: &[Self], dst: &mut [f32]) {
        assert_eq!(src.len(), dst.len());
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
    fn store_f32(src: &[f32], dst: &mut [Self]) {
        assert_eq!(src.len(), dst.len());
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = bf16::from_bits(f32_to_bf16_bits(x));
        }
    }
    fn dot_widen(a: &[f32], b: &[Self]) -> f32 {
        simd::dot_bf16(a, b)
    }
    fn axpy_widen(y: &mut [f32], w: f32, x: &[Self]) {
        simd::axpy_bf16(y, w, x);
    }
}

/// f32 → bf16 bits, round to nearest even; NaN stays NaN (quiet bit set), as `bf16::from_f32`.
#[inline]
fn f32_to_bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((b >> 16) | 0x40) as u16;
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        quiet_nan
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversions_are_bit_exact_with_half() {
        let mut xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFFF_FFFF),
        ];
        let mut state = 0x1234_5678u32;
        for _ in 0..100_000 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(f32::from_bits(state));
        }
        let mut ours = vec![bf16::ZERO; xs.len()];
        bf16::store_f32(&xs, &mut ours);
        for (x, o) in xs.iter().zip(&ours) {
            assert_eq!(
                o.to_bits(),
                bf16::from_f32(*x).to_bits(),
                "{x:e} ({:#x})",
                x.to_bits()
            );
        }
        let mut back = vec![0.0f32; xs.len()];
        bf16::load_f32(&ours, &mut back);
        for (o, b) in ours.iter().zip(&back) {
            assert_eq!(b.to_bits(), o.to_f32().to_bits());
        }
    }
}
