//! Seeded random values for weights and caches, generated in parallel blocks (a 1.3B model is
//! over a billion values): uniform in [-amplitude, amplitude), rounded once to the element.

use rayon::prelude::*;
use retention_core::{Element, SplitMix64};

/// Elements per independently seeded block.
const BLOCK: usize = 1 << 16;

/// Fill `data` with seeded uniform values in [-amplitude, amplitude).
pub fn uniform<T: Element>(data: &mut [T], seed: u64, amplitude: f64) {
    data.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(i, block)| {
            let mut rng =
                SplitMix64::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for x in block {
                *x = T::from_f64(amplitude * rng.symmetric());
            }
        });
}

/// The seed of the `index`-th tensor of a model seeded with `seed`.
pub fn derive(seed: u64, index: u64) -> u64 {
    SplitMix64::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}
