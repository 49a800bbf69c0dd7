//! The element-wise parts of a layer, in f32 whatever the storage type: RMSNorm over the
//! model width and the FFN's GELU (tanh form), the CPU kernels of `retention_kernels::cpu`
//! (the runtime's device ops `Retention::rms_norm_into` and `gelu_in_place` run the same on
//! the CPU device and kernel-gen's `layer_ops` family elsewhere).

use retention_kernels::cpu::{gelu_in_place, rms_norm_rows};

use super::NetElement;

/// ε of every RMSNorm over the model width.
pub const NORM_EPS: f32 = 1e-6;

/// ε of the retention epilogue's per-head RMSNorm.
pub const HEAD_NORM_EPS: f64 = 1e-6;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + ε) ⊙ gain` for each row of width `gain.len()`.
pub fn rms_norm<T: NetElement>(x: &[T], gain: &[T], out: &mut [T]) {
    rms_norm_rows(x, gain, NORM_EPS, out);
}

/// GELU, tanh form: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in place.
pub fn gelu<T: NetElement>(h: &mut [T]) {
    gelu_in_place(h);
}

/// Copy columns `[start, start + width)` of each row of a `[rows, stride]` matrix into a
/// `[rows, width]` one.
pub fn columns<T: Copy>(src: &[T], stride: usize, start: usize, width: usize, dst: &mut [T]) {
    for (d, s) in dst.chunks_mut(width).zip(src.chunks(stride)) {
        d.copy_from_slice(&s[start..start + width]);
    }
}
