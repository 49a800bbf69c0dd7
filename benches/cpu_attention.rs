//! The Transformer baseline: single-query softmax attention decode over a KV cache at
//! context 1k, 8k and 32k with (H, K, V) = (16, 256, 512), f32 and bf16 caches, B = 1;
//! against it, the retention decode step of the same shape (bf16, f32 state read from DRAM)
//! in the same run.

mod support;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use half::bf16;
use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu::{self, CpuElement};
use retention_kernels::reference::RetentionParams;

const H: usize = 16;
const DK: usize = 256;
const DV: usize = 512;

fn tensor<T: CpuElement>(shape: &[usize], seed: usize) -> HostTensor<T> {
    let n = shape.iter().product();
    let data = support::pattern(n, seed)
        .into_iter()
        .map(|x| T::from_f64(f64::from(x)))
        .collect();
    HostTensor::new(shape.to_vec(), data).unwrap()
}

/// Best seconds of attention decode at `ctx` and of `retention_step`, interleaved.
fn attention_at<T: CpuElement>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    ctx: usize,
    retention_step: &mut dyn FnMut(),
) -> Option<(f64, f64)> {
    let q = tensor::<T>(&[1, H, DK], 1);
    let k = tensor::<T>(&[1, H, ctx, DK], 2);
    let v = tensor::<T>(&[1, H, ctx, DV], 3);
    let name = T::DTYPE.map_or("?", |d| d.name());
    let id = BenchmarkId::new(format!("attention_{name}_cache"), format!("ctx{ctx}"));
    let mut step = || {
        std::hint::black_box(cpu::attention_decode(&q, &k, &v, None).unwrap());
    };
    support::timed(group, id, &mut step)?;
    Some(support::interleaved(3, 3, &mut step, retention_step))
}

fn attention(c: &mut Criterion) {
    println!(
        "\nmachine: {} threads; copy bandwidth (read + write) {:.1} GB/s",
        rayon::current_num_threads(),
        support::CopyProbe::new().gbs()
    );
    let mut group = c.benchmark_group("decode_vs_attention");
    let params = RetentionParams::new(Gammas::retnet(H).unwrap(), None);
    let q = tensor::<bf16>(&[1, H, DK], 4);
    let k = tensor::<bf16>(&[1, H, DK], 5);
    let v = tensor::<bf16>(&[1, H, DV], 6);
    // Each step advances a different sequence of a 16-slot pool (128 MiB of state, 4× the
    // L3), so its 8 MiB state comes from DRAM, as when a server interleaves many sequences
    // and layers. One reused slot would sit in cache and flatter retention.
    let slots = 16;
    let mut pool = HostTensor::<f32>::zeros(vec![slots, H, DK, DV]);
    let mut next = 0usize;
    let mut retention = || {
        next = (next + 1) % slots;
        std::hint::black_box(cpu::decode_step(&q, &k, &v, &mut pool, &[next], &params).unwrap());
    };
    support::timed(
        &mut group,
        BenchmarkId::new("retention_decode", "B1_state_from_dram"),
        &mut retention,
    );
    let mut rows = Vec::new();
    for ctx in [1024usize, 8192, 32768] {
        let f32_cache = attention_at::<f32>(&mut group, ctx, &mut retention);
        let bf16_cache = attention_at::<bf16>(&mut group, ctx, &mut retention);
        rows.push((ctx, f32_cache, bf16_cache));
    }
    group.finish();
    println!(
        "\nretention decode: H=16, K=256, V=512, B=1, bf16 q/k/v/o, f32 state from DRAM (a new \
         slot of a 128 MiB pool each step); attention: same head shape, one query over the \
         cache. Times are best-of, interleaved per row."
    );
    println!(
        "\n| context | cache | attention µs | retention µs | attention / retention | attention GB/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (ctx, a32, a16) in rows {
        for (name, bytes, pair) in [("f32", 4, a32), ("bf16", 2, a16)] {
            if let Some((att, ret)) = pair {
                let gbs = (ctx * H * (DK + DV) * bytes) as f64 / att / 1e9;
                println!(
                    "| {ctx} | {name} | {:.0} | {:.0} | {:.1}× | {gbs:.1} |",
                    att * 1e6,
                    ret * 1e6,
                    att / ret
                );
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = support::config();
    targets = attention
}
criterion_main!(benches);
