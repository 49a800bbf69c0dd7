//! Prefill: the chunkwise form over a long prompt, checked against the parallel form, with the
//! final state carried into a second call.
//!
//! `cargo run --release --example prefill`

use retention::{Device, Gammas, HostTensor, Retention, RetentionParams, reference};

fn main() -> retention::Result<()> {
    let (b, t, h, k, v) = (1, 1024, 8, 64, 64);
    let ret = Retention::new(&Device::Cpu, RetentionParams::new(Gammas::retnet(h)?, None))?;
    let ramp = |n: usize, s: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + s) % 17) as f32 - 8.0) / 16.0)
            .collect()
    };
    let q = HostTensor::new(vec![b, t, h, k], ramp(b * t * h * k, 1))?;
    let kk = HostTensor::new(vec![b, t, h, k], ramp(b * t * h * k, 2))?;
    let vv = HostTensor::new(vec![b, t, h, v], ramp(b * t * h * v, 3))?;
    let start = std::time::Instant::now();
    let (o, state) = ret.chunkwise(&q, &kk, &vv, 64, None)?;
    println!("chunkwise prefill of {t} tokens: {:.2?}", start.elapsed());
    let o_par = ret.parallel(&q, &kk, &vv)?;
    let diff = reference::max_rel_diff(o.to_f64().data(), o_par.to_f64().data());
    println!("max relative difference chunkwise vs parallel: {diff:.2e}");
    // Continue from the final state.
    let (o2, _) = ret.chunkwise(&q, &kk, &vv, 64, Some(&state))?;
    println!(
        "continued: o2[0] = {} (state carried: {} f32 values)",
        o2.data()[0],
        state.len()
    );
    Ok(())
}
