//! One CPU chunkwise forward (saving states) + backward at (B = 1, H = 1, T, K, V), C = 64,
//! for instruction counting under `valgrind --tool=callgrind` (RAYON_NUM_THREADS=1).
//! Usage: `train_profile T K V` — prints the counted FLOPs (forward 2C(K+V)+4KV and backward
//! 2C(3K+2V)+8KV per token-head) so instructions per FLOP can be read off.

use retention_core::{Gammas, HostTensor};
use retention_kernels::cpu::{chunkwise_backward_with_states, chunkwise_with_states};
use retention_kernels::reference::RetentionParams;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let (t, k, v) = match args[..] {
        [t, k, v] => (t, k, v),
        _ => (2048, 128, 128),
    };
    let c = 64;
    let fill = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) / 29.0)
            .collect()
    };
    let q = HostTensor::new(vec![1, t, 1, k], fill(t * k, 1))?;
    let kk = HostTensor::new(vec![1, t, 1, k], fill(t * k, 2))?;
    let vv = HostTensor::new(vec![1, t, 1, v], fill(t * v, 3))?;
    let d_o = HostTensor::new(vec![1, t, 1, v], fill(t * v, 4))?;
    let params = RetentionParams::new(Gammas::retnet(1)?, None);
    let fwd = chunkwise_with_states(&q, &kk, &vv, &params, c, None)?;
    let g = chunkwise_backward_with_states(&q, &kk, &vv, &params, c, &fwd.states, &d_o, None)?;
    let (cf, kf, vf) = (c as f64, k as f64, v as f64);
    let flops = t as f64
        * (2.0 * cf * (kf + vf) + 4.0 * kf * vf + 2.0 * cf * (3.0 * kf + 2.0 * vf) + 8.0 * kf * vf);
    println!(
        "flops {flops:.0} check {}",
        g.dq.data()[0] + fwd.o.data()[0]
    );
    Ok(())
}
