//! Decode step: B ∈ {1, 4, 16}, (H, K, V) ∈ {(16, 256, 512), (8, 128, 128)}, bf16 q/k/v/o,
//! f32 state pool, scrambled slots. Prints bytes moved per second against the machine's
//! large-buffer copy bandwidth measured in the same run.

mod support;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use half::bf16;
use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu;
use retention_kernels::reference::RetentionParams;

fn tensor(shape: &[usize], seed: usize) -> HostTensor<bf16> {
    let n = shape.iter().product();
    let data = support::pattern(n, seed)
        .into_iter()
        .map(bf16::from_f32)
        .collect();
    HostTensor::new(shape.to_vec(), data).unwrap()
}

fn decode(c: &mut Criterion) {
    let mut probe = support::CopyProbe::new();
    let threads = rayon::current_num_threads();
    println!(
        "\nmachine: {threads} threads; copy bandwidth (read + write) {:.1} GB/s",
        probe.gbs()
    );
    let mut rows = Vec::new();
    let mut group = c.benchmark_group("decode_step");
    for (h, dk, dv) in [(16usize, 256usize, 512usize), (8, 128, 128)] {
        let params = RetentionParams::new(Gammas::retnet(h).unwrap(), None);
        for b in [1usize, 4, 16] {
            let q = tensor(&[b, h, dk], 1);
            let k = tensor(&[b, h, dk], 2);
            let v = tensor(&[b, h, dv], 3);
            let mut pool = HostTensor::<f32>::zeros(vec![b, h, dk, dv]);
            let slots: Vec<usize> = (0..b).rev().collect();
            // f32 state read + written, bf16 q, k, v, o.
            let bytes = (b * h * (8 * dk * dv + 2 * (2 * dk + 2 * dv))) as f64;
            let id = BenchmarkId::new(format!("H{h}_K{dk}_V{dv}"), format!("B{b}"));
            let mut step = || {
                let o = cpu::decode_step(&q, &k, &v, &mut pool, &slots, &params).unwrap();
                std::hint::black_box(o);
            };
            if support::timed(&mut group, id, &mut step).is_some() {
                // Side by side: best decode time and best copy bandwidth, interleaved.
                let (mut s, mut copy) = (f64::INFINITY, 0.0f64);
                for _ in 0..3 {
                    s = s.min(support::best_of(5, &mut step));
                    copy = copy.max(probe.gbs());
                }
                rows.push((h, dk, dv, b, s, bytes / s / 1e9, copy));
            }
        }
    }
    group.finish();
    println!("\n| H | K | V | B | µs/step (best) | GB/s | copy GB/s, same rounds | of copy bw |");
    println!("|---|---|---|---|---|---|---|---|");
    for (h, dk, dv, b, s, gbs, copy) in rows {
        println!(
            "| {h} | {dk} | {dv} | {b} | {:.1} | {gbs:.1} | {copy:.1} | {:.0}% |",
            s * 1e6,
            100.0 * gbs / copy
        );
    }
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = decode
}
criterion_main!(benches);
