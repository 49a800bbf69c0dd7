//! Training step on the CPU: chunkwise forward + backward at T ∈ {2048, 4096}, B = 1, H = 4,
//! K = V = 64, C = 64, f32 inputs, with dH_T and d log γ, two ways: the backward recomputing
//! the chunk states (`chunkwise` + `chunkwise_backward`) and the forward saving them
//! (`chunkwise_with_states` + `chunkwise_backward_with_states`).
//!
//! FLOPs are counted from the products, per head and full chunk of C tokens, lower-triangular
//! C×C products counted in full as gemm runs them (as the forward bench does):
//! - forward: Q Kᵀ 2C²K, A V 2C²V, Q R 2CKV, Kᵀ V 2CKV → per token 2C(K+V) + 4KV;
//! - backward: Q Kᵀ 2C²K, dO Vᵀ 2C²V, dO Rᵀ 2CKV, M K 2C²K, V dRᵀ 2CKV, Mᵀ Q 2C²K, Pᵀ dO
//!   2C²V, K dR 2CKV, Qᵀ dO 2CKV → per token 2C(3K+2V) + 8KV, plus 2KV when it recomputes
//!   the states (Kᵀ V once more);
//! - a training step: per token 2C(4K+3V) + 14KV (recompute) or + 12KV (saved states).
//!
//! Beside it, in the same run: the gemm crate running exactly those products on the same
//! shapes, threaded the same way (one task per head), and its 512³ f32 peak on all threads.

#[path = "../../benches/support/mod.rs"]
mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rayon::prelude::*;
use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu;
use retention_kernels::reference::RetentionParams;

const H: usize = 4;
const D: usize = 64;
const C: usize = 64;

fn tensor(shape: &[usize], seed: usize) -> HostTensor<f32> {
    HostTensor::new(
        shape.to_vec(),
        support::pattern(shape.iter().product(), seed),
    )
    .unwrap()
}

/// Seconds for the gemm crate alone to run a training step's products (forward, backward
/// and the state recompute: 14 per head and chunk) on the same shapes.
fn gemm_same_shapes(t: usize) -> f64 {
    let (c, dk, dv) = (C, D, D);
    let q = support::pattern(c * dk, 1);
    let k = support::pattern(c * dk, 2);
    let v = support::pattern(c * dv, 3);
    let d_o = support::pattern(c * dv, 4);
    support::best_of(2, || {
        (0..H).into_par_iter().for_each(|_| {
            let none = gemm::Parallelism::None;
            let (mut a, mut m) = (vec![0.0f32; c * c], vec![0.0f32; c * c]);
            let (mut o, mut dq) = (vec![0.0f32; c * dv], vec![0.0f32; c * dk]);
            let (mut dkt, mut dvt) = (vec![0.0f32; c * dk], vec![0.0f32; c * dv]);
            let (mut r, mut dr) = (vec![0.0f32; dk * dv], vec![0.0f32; dk * dv]);
            let r_prev = vec![0.0f32; dk * dv];
            for _ in 0..t.div_ceil(c) {
                // Forward.
                support::gemm_into(c, c, dk, &mut a, c, false, &q, dk, 1, &k, 1, dk, none);
                support::gemm_into(c, dv, c, &mut o, dv, false, &a, c, 1, &v, dv, 1, none);
                support::gemm_into(c, dv, dk, &mut o, dv, true, &q, dk, 1, &r_prev, dv, 1, none);
                support::gemm_into(dk, dv, c, &mut r, dv, true, &k, 1, dk, &v, dv, 1, none);
                // Backward, with the state recompute.
                support::gemm_into(dk, dv, c, &mut r, dv, true, &k, 1, dk, &v, dv, 1, none);
                support::gemm_into(c, c, dk, &mut a, c, false, &q, dk, 1, &k, 1, dk, none);
                support::gemm_into(c, c, dv, &mut m, c, false, &d_o, dv, 1, &v, 1, dv, none);
                support::gemm_into(
                    c, dk, dv, &mut dq, dk, false, &d_o, dv, 1, &r_prev, 1, dv, none,
                );
                support::gemm_into(c, dk, c, &mut dq, dk, true, &m, c, 1, &k, dk, 1, none);
                support::gemm_into(c, dk, dv, &mut dkt, dk, false, &v, dv, 1, &dr, 1, dv, none);
                support::gemm_into(c, dk, c, &mut dkt, dk, true, &m, 1, c, &q, dk, 1, none);
                support::gemm_into(c, dv, c, &mut dvt, dv, false, &a, 1, c, &d_o, dv, 1, none);
                support::gemm_into(
                    c, dv, dk, &mut dvt, dv, true, &k, dk, 1, &r_prev, dv, 1, none,
                );
                support::gemm_into(dk, dv, c, &mut dr, dv, true, &q, 1, dk, &d_o, dv, 1, none);
            }
            std::hint::black_box((&a, &m, &o, &dq, &dkt, &dvt, &r, &dr));
        });
    })
}

fn train_step(cr: &mut Criterion) {
    let threads = rayon::current_num_threads();
    println!(
        "\nmachine: {threads} threads; gemm crate f32 peak (512³, all threads) {:.1} GFLOP/s",
        support::gemm_square_gflops(512)
    );
    let params = RetentionParams::new(Gammas::retnet(H).unwrap(), None);
    let (kd, vd) = (D as f64, D as f64);
    let per_token_recompute = 2.0 * C as f64 * (4.0 * kd + 3.0 * vd) + 14.0 * kd * vd;
    let per_token_saved = per_token_recompute - 2.0 * kd * vd;
    let mut rows = Vec::new();
    let mut group = cr.benchmark_group("cpu_train_step");
    for t in [2048usize, 4096] {
        let q = tensor(&[1, t, H, D], 1);
        let k = tensor(&[1, t, H, D], 2);
        let v = tensor(&[1, t, H, D], 3);
        let d_o = tensor(&[1, t, H, D], 4);
        let d_ht = tensor(&[1, H, D, D], 5);
        let tokens = (H * t) as f64;
        let mut recompute = || {
            let (o, ht) = cpu::chunkwise(&q, &k, &v, &params, C, None).unwrap();
            let g =
                cpu::chunkwise_backward(&q, &k, &v, &params, C, None, &d_o, Some(&d_ht)).unwrap();
            std::hint::black_box((o, ht, g));
        };
        let mut saved = || {
            let f = cpu::chunkwise_with_states(&q, &k, &v, &params, C, None).unwrap();
            let g = cpu::chunkwise_backward_with_states(
                &q,
                &k,
                &v,
                &params,
                C,
                &f.states,
                &d_o,
                Some(&d_ht),
            )
            .unwrap();
            std::hint::black_box((f, g));
        };
        let id = |what: &str| BenchmarkId::new(format!("T{t}"), what);
        let ran = support::timed(&mut group, id("recompute"), &mut recompute).is_some()
            && support::timed(&mut group, id("saved_states"), &mut saved).is_some();
        if ran {
            // Side by side: best of ours and best of gemm alone, interleaved.
            let (mut a, mut b, mut g) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
            for _ in 0..3 {
                a = a.min(support::best_of(2, &mut recompute));
                b = b.min(support::best_of(2, &mut saved));
                g = g.min(gemm_same_shapes(t));
            }
            let gemm = tokens * per_token_recompute / g / 1e9;
            rows.push((
                t,
                "recompute",
                a,
                tokens * per_token_recompute / a / 1e9,
                gemm,
            ));
            rows.push((
                t,
                "saved states",
                b,
                tokens * per_token_saved / b / 1e9,
                gemm,
            ));
        }
    }
    group.finish();
    println!(
        "\nB = 1, H = {H}, K = V = {D}, C = {C}, f32 inputs; forward + backward (dq, dk, dv, dh0, d log γ)"
    );
    println!("| T | states | ms (best) | GFLOP/s | gemm GFLOP/s, same shapes | ratio |");
    println!("|---|---|---|---|---|---|");
    for (t, how, s, ours, gemm) in rows {
        println!(
            "| {t} | {how} | {:.2} | {ours:.1} | {gemm:.1} | {:.0}% |",
            s * 1e3,
            100.0 * ours / gemm
        );
    }
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = train_step
}
criterion_main!(benches);
