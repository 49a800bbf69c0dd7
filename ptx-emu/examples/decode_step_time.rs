//! Times one decode-step-shaped launch at N=4, H=8, K=V=128 (the speed target of issue 4):
//! `cargo run --release -p ptx-emu --example decode_step_time`. Prints the best and median
//! wall time of 10 launches; run under `RAYON_NUM_THREADS=1` and `time` to see the
//! single-core CPU cost on a busy machine.
use std::time::Instant;

use ptx_emu::{Buffer, Dtype, Launch, Module, Param};

fn main() -> Result<(), ptx_emu::EmuError> {
    let (n, h, k, v) = (4usize, 8usize, 128usize, 128usize);
    let module = Module::parse(include_str!("../tests/data/decode_like.ptx"))?;
    let fill = |len: usize| {
        (0..len)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect::<Vec<f32>>()
    };
    let base = Launch::new("decode_like", [h as u32, n as u32, 1], [v as u32, 1, 1])
        .arg(Param::Buffer(Buffer::from_f32(&fill(n * h * k))))
        .arg(Param::Buffer(Buffer::from_f32(&fill(n * h * k))))
        .arg(Param::Buffer(Buffer::from_f32(&fill(n * h * v))))
        .arg(Param::Buffer(
            Buffer::from_f32(&fill(n * h * k * v)).output(),
        ))
        .arg(Param::Buffer(Buffer::zeros(Dtype::F32, n * h * v)))
        .arg(Param::F32(0.97))
        .arg(Param::F32(0.088))
        .arg(Param::U32(k as u32))
        .arg(Param::U32(v as u32));
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..10 {
        let mut l = base.clone();
        let t = Instant::now();
        report = Some(module.launch(&mut l)?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let r = report.expect("ran 10 launches");
    println!(
        "decode step N={n} H={h} K={k} V={v}: best {:.1} ms, median {:.1} ms; {} warp instructions, {} thread instructions",
        times[0] * 1e3,
        times[5] * 1e3,
        r.instructions.total(),
        r.thread_instructions
    );
    Ok(())
}
