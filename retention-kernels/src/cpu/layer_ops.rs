//! The element-wise parts of a decoder layer around retention, on host memory in place, in
//! f32 whatever the storage type: RMSNorm with a gain over the model width and the FFN's
//! GELU (tanh form). Rows run in parallel. The runtime's CPU device runs these on its
//! tensors' own memory; its GPU-like devices run kernel-gen's `layer_ops` family.

use rayon::prelude::*;

use super::CpuElement;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) ⊙ gain` for each row of width `gain.len()`
/// (a row whose mean square plus eps is not positive — all zeros, eps = 0 — gives 0).
/// `x` and `out` hold whole rows of that width.
pub fn rms_norm_rows<T: CpuElement>(x: &[T], gain: &[T], eps: f32, out: &mut [T]) {
    let d = gain.len().max(1);
    let mut g = vec![0f32; gain.len()];
    T::load_f32(gain, &mut g);
    out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each_init(
        || vec![0f32; d],
        |row, (o, xi)| {
            T::load_f32(xi, row);
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps;
            let inv = if ms > 0.0 { 1.0 / ms.sqrt() } else { 0.0 };
            for (v, gi) in row.iter_mut().zip(&g) {
                *v *= inv * gi;
            }
            T::store_f32(row, o);
        },
    );
}

/// GELU, tanh form: `x/2 · (1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in place.
pub fn gelu_in_place<T: CpuElement>(h: &mut [T]) {
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
