//! The machine's own limits, measured in the same run as the kernels so ratios compare like
//! with like on a shared machine (ARCHITECTURE §5): large-buffer copy bandwidth and f32 GEMM
//! throughput of the `gemm` crate.

use std::convert::Infallible;
use std::time::Duration;

use rayon::prelude::*;

use crate::timing::RepeatPlan;

use super::report::Limits;

/// Sizes of the limit probes.
#[derive(Debug, Clone, Copy)]
pub struct LimitSizes {
    /// f32 elements in each of the copy's source and destination.
    pub copy_floats: usize,
    /// Side of the square GEMM.
    pub gemm_n: usize,
}

impl LimitSizes {
    /// 2 × 128 MiB (far beyond any cache) and a 512³ product.
    pub const FULL: Self = Self {
        copy_floats: 32 << 20,
        gemm_n: 512,
    };
    /// 2 × 16 MiB and a 256³ product.
    pub const QUICK: Self = Self {
        copy_floats: 4 << 20,
        gemm_n: 256,
    };
}

const PLAN: RepeatPlan = RepeatPlan {
    min_runs: 3,
    max_runs: 10,
    budget: Duration::from_millis(300),
};

/// Measure both limits.
pub fn measure(sizes: LimitSizes) -> Limits {
    Limits {
        copy_gbps: copy_gbps(sizes.copy_floats),
        gemm_gflops: Some(gemm_gflops(sizes.gemm_n)),
        predicted: false,
        gpu_model: None,
    }
}

/// Parallel block copy of `floats` f32, counted as bytes read + bytes written per second (the
/// convention of the decode figures: state read + state written).
fn copy_gbps(floats: usize) -> f64 {
    let src: Vec<f32> = (0..floats).into_par_iter().map(|i| i as f32).collect();
    let mut dst = vec![1.0f32; floats];
    let block = 1 << 16;
    let t = PLAN
        .measure::<Infallible>(1, || {
            dst.par_chunks_mut(block)
                .zip(src.par_chunks(block))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&mut dst);
            Ok(())
        })
        .unwrap_or_else(|never| match never {});
    2.0 * (floats * 4) as f64 / t.median.max(1e-12) / 1e9
}

/// C ← A·B for n×n f32 matrices on every thread, in GFLOP/s (2n³ per product).
fn gemm_gflops(n: usize) -> f64 {
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads();
    let t = PLAN
        .measure::<Infallible>(1, || {
            // SAFETY: a, b and c each hold n·n f32 with row stride n and column stride 1, so
            // every index the product touches is in bounds, and c is a unique borrow that
            // aliases neither operand.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
            }
            std::hint::black_box(&mut c);
            Ok(())
        })
        .unwrap_or_else(|never| match never {});
    2.0 * (n * n * n) as f64 / t.median.max(1e-12) / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_positive_and_finite() {
        let l = measure(LimitSizes {
            copy_floats: 1 << 16,
            gemm_n: 32,
        });
        assert!(l.copy_gbps.is_finite() && l.copy_gbps > 0.0);
        assert!(l.gemm_gflops.is_some_and(|g| g.is_finite() && g > 0.0));
    }
}
