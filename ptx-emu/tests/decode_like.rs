//! An end-to-end kernel shaped like a retention decode step, checked against an f64
//! reference computed here, plus its cost counters.
mod common;
use common::Rng;
use ptx_emu::{Buffer, Dtype, Launch, Module, Param};

const DECODE_LIKE: &str = include_str!("data/decode_like.ptx");

#[test]
fn decode_step_matches_the_f64_reference() {
    let (n, h, k, v) = (2usize, 3usize, 16usize, 32usize);
    let (gamma, scale) = (0.96875f32, 0.25f32);
    let mut rng = Rng(2024);
    let mut random = |len: usize| (0..len).map(|_| rng.unit()).collect::<Vec<f32>>();
    let q = random(n * h * k);
    let key = random(n * h * k);
    let val = random(n * h * v);
    let state = random(n * h * k * v);
    let m = Module::parse(DECODE_LIKE).unwrap();
    let mut l = Launch::new("decode_like", [h as u32, n as u32, 1], [v as u32, 1, 1])
        .arg(Param::Buffer(Buffer::from_f32(&q)))
        .arg(Param::Buffer(Buffer::from_f32(&key)))
        .arg(Param::Buffer(Buffer::from_f32(&val)))
        .arg(Param::Buffer(Buffer::from_f32(&state).output()))
        .arg(Param::Buffer(Buffer::zeros(Dtype::F32, n * h * v)))
        .arg(Param::F32(gamma))
        .arg(Param::F32(scale))
        .arg(Param::U32(k as u32))
        .arg(Param::U32(v as u32));
    let report = m.launch(&mut l).unwrap();
    let new_state = l.buffer(3).unwrap().to_f32();
    let out = l.buffer(4).unwrap().to_f32();
    for row in 0..n * h {
        for j in 0..v {
            // f32 error bounds of the kernel's own operation order: two roundings per state
            // element, and a K-term dot product.
            let eps = f32::EPSILON as f64;
            let mut acc = 0f64;
            let mut magnitude = 0f64;
            for i in 0..k {
                let decayed = gamma as f64 * state[(row * k + i) * v + j] as f64;
                let kv = key[row * k + i] as f64 * val[row * v + j] as f64;
                let s = decayed + kv;
                let got = new_state[(row * k + i) * v + j] as f64;
                let bound = 2.0 * eps * (decayed.abs() + kv.abs());
                assert!(
                    (got - s).abs() <= bound,
                    "state row {row} k {i} j {j}: {got} vs {s}"
                );
                acc += q[row * k + i] as f64 * s;
                magnitude += (q[row * k + i] as f64 * s).abs();
            }
            let want = scale as f64 * acc;
            let got = out[row * v + j] as f64;
            let bound = (k as f64 + 4.0) * eps * scale as f64 * magnitude;
            assert!(
                (got - want).abs() <= bound,
                "out row {row} j {j}: {got} vs {want}"
            );
        }
    }
    // State read + written once, val read once, out written once (requested bytes), plus the
    // per-thread (broadcast) q and key loads.
    let rows = (n * h) as u64;
    let (k, v) = (k as u64, v as u64);
    assert_eq!(report.global_bytes_written, rows * (k * v + v) * 4);
    assert_eq!(report.global_bytes_read, rows * (k * v + v + 2 * k * v) * 4);
    // Coalesced: one warp request of 32 f32 = 4 sectors; broadcasts = 1 sector.
    assert_eq!(report.global_sectors, rows * (k * (4 + 4 + 1 + 1) + 4 + 4));
    assert_eq!(report.instructions.st_global, rows * (k + 1));
    assert!(report.predicted_h100_seconds < report.predicted_a100_seconds);
}
