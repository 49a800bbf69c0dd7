//! What every CPU bench shares: a modest criterion configuration, a way to read back the
//! mean time criterion measured, and the machine's own limits measured in the same run.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion};
use rayon::prelude::*;

/// Few samples and short windows: the whole set must run in minutes on 2 cores.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// Benchmark `f` in `group` and return the mean seconds per call over every timed
/// iteration (warm-up included), or `None` when a filter skipped it.
pub fn timed<F: FnMut()>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    mut f: F,
) -> Option<f64> {
    let mut total = Duration::ZERO;
    let mut calls = 0u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let elapsed = start.elapsed();
            total += elapsed;
            calls += iters;
            elapsed
        });
    });
    (calls > 0).then(|| total.as_secs_f64() / calls as f64)
}

/// Best of `reps` timings of `f`, in seconds.
pub fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Large-buffer copy on all threads, kept allocated so it can be re-measured between
/// the kernel's own timings (the machine is shared: only interleaved figures compare).
pub struct CopyProbe {
    src: Vec<f32>,
    dst: Vec<f32>,
}

impl CopyProbe {
    /// 256 MiB source and destination, far beyond any cache.
    pub fn new() -> Self {
        const FLOATS: usize = 64 << 20;
        Self {
            src: (0..FLOATS).into_par_iter().map(|i| i as f32).collect(),
            dst: vec![1.0f32; FLOATS],
        }
    }

    /// Best of 3 copies, as bytes read + bytes written per second (the same convention as
    /// the decode bytes: state read + state written), in GB/s.
    pub fn gbs(&mut self) -> f64 {
        let block = 1 << 16;
        let (src, dst) = (&self.src, &mut self.dst);
        let secs = best_of(3, || {
            dst.par_chunks_mut(block)
                .zip(src.par_chunks(block))
                .for_each(|(d, s)| d.copy_from_slice(s));
            std::hint::black_box(&mut *dst);
        });
        2.0 * (src.len() * 4) as f64 / secs / 1e9
    }
}

/// Best times of `a` and `b` over `rounds` interleaved rounds of `reps` calls each, so both
/// see the same share of a machine other jobs are also using.
pub fn interleaved<A: FnMut(), B: FnMut()>(
    rounds: usize,
    reps: usize,
    mut a: A,
    mut b: B,
) -> (f64, f64) {
    let (mut ta, mut tb) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        ta = ta.min(best_of(reps, &mut a));
        tb = tb.min(best_of(reps, &mut b));
    }
    (ta, tb)
}

/// f32 GFLOP/s of the gemm crate on one large square product, all threads.
pub fn gemm_square_gflops(n: usize) -> f64 {
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = rayon::current_num_threads();
    let secs = best_of(3, || {
        gemm_into(
            n,
            n,
            n,
            &mut c,
            n,
            false,
            &a,
            n,
            1,
            &b,
            n,
            1,
            gemm::Parallelism::Rayon(threads),
        );
    });
    2.0 * (n * n * n) as f64 / secs / 1e9
}

/// `dst (m×n, row stride ld) ← [dst +] lhs·rhs` through the gemm crate with the given strides.
pub fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    ld: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    par: gemm::Parallelism,
) {
    assert!((m - 1) * ld + n <= dst.len());
    assert!((m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len());
    assert!((k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len());
    // SAFETY: every index the product touches is in bounds (asserted above) and dst is a
    // unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            ld as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Deterministic values in [−1, 1) without a slow generator (benches fill gigabytes).
pub fn pattern(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            let x = (i
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(40_503)))
                % 65_536;
            x as f32 / 32_768.0 - 1.0
        })
        .collect()
}
