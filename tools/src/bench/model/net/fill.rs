//! Seeded random values for weights and caches, generated in parallel blocks (a 1.3B model is
//! over a billion values): uniform in [-amplitude, amplitude), drawn in f32 and narrowed with
//! the element's vector conversion (exact f64 rounding to f16 costs more than the model step).

use rayon::prelude::*;
use retention_core::SplitMix64;
use retention_kernels::cpu::CpuElement;

/// Elements per independently seeded block.
const BLOCK: usize = 1 << 16;

/// Fill `data` with seeded uniform values in [-amplitude, amplitude).
pub fn uniform<T: CpuElement>(data: &mut [T], seed: u64, amplitude: f64) {
    let amplitude = amplitude as f32;
    data.par_chunks_mut(BLOCK).enumerate().for_each_init(
        || vec![0f32; BLOCK],
        |buf, (i, block)| {
            let mut rng =
                SplitMix64::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let vals = &mut buf[..block.len()];
            for v in vals.iter_mut() {
                // 24 random bits → [-1, 1) exactly in f32.
                let u = (rng.next_u64() >> 40) as f32 * (1.0 / (1u32 << 23) as f32) - 1.0;
                *v = amplitude * u;
            }
            T::store_f32(vals, block);
        },
    );
}

/// The seed of the `index`-th tensor of a model seeded with `seed`.
pub fn derive(seed: u64, index: u64) -> u64 {
    SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}
