//! Seeded random inputs for measurements: values in [-0.5, 0.5) in any input dtype, generated
//! in parallel blocks (a 32k-token KV cache is hundreds of MiB).

use rayon::prelude::*;
use retention_core::{Element, HostTensor, Result, SplitMix64};

/// Elements per independently seeded block.
const BLOCK: usize = 1 << 16;

/// A tensor of `shape` with seeded values in [-0.5, 0.5), rounded once to `T`.
///
/// # Errors
/// None in practice: the data always has the shape's length.
pub fn random<T: Element>(shape: &[usize], seed: u64) -> Result<HostTensor<T>> {
    let n: usize = shape.iter().product();
    let mut data = vec![T::default(); n];
    data.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(i, block)| {
            let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for x in block {
                *x = T::from_f64(0.5 * rng.symmetric());
            }
        });
    HostTensor::new(shape.to_vec(), data)
}
