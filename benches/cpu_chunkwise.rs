//! Chunkwise prefill: T ∈ {2048, 8192}, B = 1, H = 8, K = V = 128, C ∈ {32, 64, 128, 256},
//! bf16 inputs. Prints GFLOP/s (T·[2C(K+V) + 4KV] per head) against the gemm crate running
//! exactly the same four chunk products per head, threaded the same way, in the same run.

mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use half::bf16;
use rayon::prelude::*;
use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu;
use retention_kernels::reference::RetentionParams;

const H: usize = 8;
const D: usize = 128;

fn tensor(shape: &[usize], seed: usize) -> HostTensor<bf16> {
    let n = shape.iter().product();
    let data = support::pattern(n, seed)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    HostTensor::new(shape.to_vec(), data).unwrap()
}

/// Seconds for the gemm crate alone to run the chunk products of the whole problem:
/// per head and chunk, Q Kᵀ (C×C×K), A V (C×V×C), Q R (C×V×K) and Kᵀ V (K×V×C).
fn gemm_same_shapes(t: usize, c: usize) -> f64 {
    let (dk, dv) = (D, D);
    let q = support::pattern(c * dk, 1);
    let k = support::pattern(c * dk, 2);
    let v = support::pattern(c * dv, 3);
    support::best_of(2, || {
        (0..H).into_par_iter().for_each(|_| {
            let mut a = vec![0.0f32; c * c];
            let mut o = vec![0.0f32; c * dv];
            let mut r = vec![0.0f32; dk * dv];
            // Q R reads the previous state while Kᵀ V writes the next one.
            let r_prev = vec![0.0f32; dk * dv];
            let none = gemm::Parallelism::None;
            for _ in 0..t.div_ceil(c) {
                support::gemm_into(c, c, dk, &mut a, c, false, &q, dk, 1, &k, 1, dk, none);
                support::gemm_into(c, dv, c, &mut o, dv, false, &a, c, 1, &v, dv, 1, none);
                support::gemm_into(c, dv, dk, &mut o, dv, true, &q, dk, 1, &r_prev, dv, 1, none);
                support::gemm_into(dk, dv, c, &mut r, dv, true, &k, 1, dk, &v, dv, 1, none);
            }
            std::hint::black_box((&a, &o, &r));
        });
    })
}

fn chunkwise(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    println!(
        "\nmachine: {threads} threads; gemm crate f32 peak (512³, all threads) {:.1} GFLOP/s",
        support::gemm_square_gflops(512)
    );
    let params = RetentionParams::new(Gammas::retnet(H).unwrap(), None);
    let mut rows = Vec::new();
    let mut group = c.benchmark_group("chunkwise_prefill");
    for t in [2048usize, 8192] {
        let q = tensor(&[1, t, H, D], 1);
        let k = tensor(&[1, t, H, D], 2);
        let v = tensor(&[1, t, H, D], 3);
        for chunk in [32usize, 64, 128, 256] {
            let flops = (H * t * (2 * chunk * (D + D) + 4 * D * D)) as f64;
            let id = BenchmarkId::new(format!("T{t}"), format!("C{chunk}"));
            let mut run = || {
                let out = cpu::chunkwise(&q, &k, &v, &params, chunk, None).unwrap();
                std::hint::black_box(out);
            };
            if support::timed(&mut group, id, &mut run).is_some() {
                // Side by side: best of ours and best of gemm alone, interleaved.
                let (mut s, mut g) = (f64::INFINITY, f64::INFINITY);
                for _ in 0..3 {
                    s = s.min(support::best_of(2, &mut run));
                    g = g.min(gemm_same_shapes(t, chunk));
                }
                rows.push((t, chunk, s, flops / s / 1e9, flops / g / 1e9));
            }
        }
    }
    group.finish();
    println!("\n| T | C | ms (best) | GFLOP/s | gemm GFLOP/s, same shapes | ratio |");
    println!("|---|---|---|---|---|---|");
    for (t, chunk, s, ours, gemm) in rows {
        println!(
            "| {t} | {chunk} | {:.2} | {ours:.1} | {gemm:.1} | {:.0}% |",
            s * 1e3,
            100.0 * ours / gemm
        );
    }
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = chunkwise
}
criterion_main!(benches);
