//! Emulation speed of a decode-step-shaped kernel at N=4, H=8, K=V=128 (0.5M f32 state
//! elements read, FMA'd and written, plus the q·S accumulation).
use criterion::{Criterion, criterion_group, criterion_main};
use ptx_emu::{Buffer, Dtype, Launch, Module, Param};

fn decode_step(c: &mut Criterion) {
    let (n, h, k, v) = (4usize, 8usize, 128usize, 128usize);
    let m = Module::parse(include_str!("../tests/data/decode_like.ptx")).unwrap();
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
    let mut g = c.benchmark_group("emulate");
    g.sample_size(10);
    g.bench_function("decode_like_n4_h8_k128_v128", |b| {
        b.iter(|| {
            let mut l = base.clone();
            m.launch(&mut l).unwrap()
        });
    });
    g.finish();
}

criterion_group!(benches, decode_step);
criterion_main!(benches);
