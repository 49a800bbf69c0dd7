//! The chunkwise forward's throughput on a GPU for one shape and every chunk size the catalog
//! serves: kernel time between device events (median of repeated launches) on `cuda`, or the
//! emulator's *predicted* time on `emulated` (keep the shape small there).
//!
//! ```text
//! cargo run --release --example chunkwise_rate -- [cuda|emulated] [B H T K V] [f32|f16|bf16]
//! ```
//! Defaults: the best device, fla's benchmark shape B=8, H=32, T=16384, K=V=128, bf16.
//! FLOPs counted as ARCHITECTURE §5: T·[2C(K+V) + 4KV] per (row, head).

use retention::{Device, Dtype, Gammas, RetentionShape};
use retention_runtime::kernel_timing::KernelTimer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.first().map(String::as_str) {
        Some(name) => Device::from_name(name)?,
        None => Device::best(),
    };
    let dims: Vec<usize> = args
        .iter()
        .skip(1)
        .take(5)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [b, h, t, k, v] = <[usize; 5]>::try_from(dims).unwrap_or([8, 32, 16384, 128, 128]);
    let dtype: Dtype = args.get(6).map_or(Ok(Dtype::Bf16), |d| d.parse())?;
    let timer = KernelTimer::new(&device, 20)?;
    let shape = RetentionShape::new(b, t, h, k, v)?;
    let gammas = Gammas::retnet(h)?;
    println!("{device}: B={b} H={h} T={t} K={k} V={v} {dtype}");
    for chunk in [32usize, 64, 128, 256] {
        match timer.chunkwise(&gammas, dtype, &shape, chunk) {
            Ok(r) => {
                let (kk, vv, c) = (k as f64, v as f64, chunk as f64);
                let flops = (b * h) as f64 * t as f64 * (2.0 * c * (kk + vv) + 4.0 * kk * vv);
                println!(
                    "C={chunk:<4} {:<40} {:>10.3} ms  {:>7.1} TFLOP/s{}",
                    r.spec.slug(),
                    r.seconds * 1e3,
                    flops / r.seconds / 1e12,
                    if r.predicted { "  (PREDICTED)" } else { "" }
                );
            }
            Err(e) => println!("C={chunk:<4} {e}"),
        }
    }
    Ok(())
}
