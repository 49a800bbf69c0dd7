//! The element-wise parts of a layer, in f32 whatever the storage type: RMSNorm over the
//! model width and the FFN's GELU (tanh form). Rows run in parallel.

use rayon::prelude::*;

use super::NetElement;

/// ε of every RMSNorm over the model width.
pub const NORM_EPS: f32 = 1e-6;

/// ε of the retention epilogue's per-head RMSNorm.
pub const HEAD_NORM_EPS: f64 = 1e-6;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + ε) ⊙ gain` for each row of width `gain.len()`.
pub fn rms_norm<T: NetElement>(x: &[T], gain: &[T], out: &mut [T]) {
    let d = gain.len().max(1);
    let mut g = vec![0f32; gain.len()];
    T::load_f32(gain, &mut g);
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each_init(
        || vec![0f32; d],
        |row, (o, xi)| {
            T::load_f32(xi, row);
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let inv = 1.0 / (ms + NORM_EPS).sqrt();
            for (v, gi) in row.iter_mut().zip(&g) {
                *v *= inv * gi;
            }
            T::store_f32(row, o);
        },
    );
}

/// GELU, tanh form: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in place.
pub fn gelu<T: NetElement>(h: &mut [T]) {
    const BLOCK: usize = 4096;
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    h.par_chunks_mut(BLOCK).for_each_init(
        || vec![0f32; BLOCK],
        |buf, block| {
            let row = &mut buf[..block.len()];
            T::load_f32(block, row);
            for v in row.iter_mut() {
                let x = *v;
                *v = 0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh());
            }
            T::store_f32(row, block);
        },
    );
}

/// Copy columns `[start, start + width)` of each row of a `[rows, stride]` matrix into a
/// `[rows, width]` one.
pub fn columns<T: Copy>(src: &[T], stride: usize, start: usize, width: usize, dst: &mut [T]) {
    for (d, s) in dst.chunks_mut(width).zip(src.chunks(stride)) {
        d.copy_from_slice(&s[start..start + width]);
    }
}
