//! Serving: a state pool, two sequences prefilled, then decoded together in one batch while a
//! third joins — continuous batching with O(1) state per sequence.
//!
//! `cargo run --release --example decode`

use retention::{Device, Gammas, HostTensor, Retention, RetentionParams};

fn main() -> retention::Result<()> {
    let (heads, dk, dv, layers) = (4, 64, 64, 2);
    let ret = Retention::new(
        &Device::best(),
        RetentionParams::new(Gammas::retnet(heads)?, None),
    )?;
    let mut pool = ret.state_pool(heads, dk, dv, layers, 8)?;
    let ramp = |n: usize, s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 31 + s * 17) % 13) as f32 - 6.0) / 8.0)
            .collect()
    };
    let seqs = [pool.alloc()?, pool.alloc()?];
    for (i, &slot) in seqs.iter().enumerate() {
        let t = 16 + 8 * i;
        let q = HostTensor::new(vec![1, t, heads, dk], ramp(t * heads * dk, i))?;
        let v = HostTensor::new(vec![1, t, heads, dv], ramp(t * heads * dv, i + 7))?;
        for layer in 0..layers {
            pool.prefill(layer, slot, &q, &q, &v, 8)?;
        }
    }
    let late = pool.alloc()?;
    let batch = [seqs[1], late, seqs[0]]; // rows in any slot order
    for step in 0..4 {
        let n = batch.len();
        let q = HostTensor::new(vec![n, heads, dk], ramp(n * heads * dk, 100 + step))?;
        let v = HostTensor::new(vec![n, heads, dv], ramp(n * heads * dv, 200 + step))?;
        let o = pool.step(0, &batch, &q, &q, &v)?;
        println!("step {step}: o[0,0,..4] = {:?}", &o.data()[..4]);
    }
    println!(
        "{} sequences, {} bytes of state each; pool high-water mark {} bytes",
        pool.in_use(),
        pool.bytes_per_sequence(),
        ret.memory().stats().high_water
    );
    Ok(())
}
