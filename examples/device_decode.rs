//! The device API: q, k, v and o stay in the device's memory, a decode step is `stage` (the
//! slot rows, 4 bytes per sequence) plus one `step_into` per layer on the caller's stream,
//! and a whole step is captured once as a graph and replayed. On a machine without a GPU
//! it runs on the PTX emulator, where the stream's byte counter shows nothing else moved.
//!
//! `cargo run --release --example device_decode`

use retention::{
    Device, DeviceDtype, DeviceTensor, Gammas, HostTensor, MemoryPool, Retention, RetentionParams,
    Stream,
};

fn main() -> retention::Result<()> {
    let (heads, dk, dv, layers, batch) = (2, 64, 64, 2, 3);
    let device = Device::cuda(0).unwrap_or(Device::Emulated(kernel_gen::Arch::Sm80));
    let ret = Retention::new(&device, RetentionParams::new(Gammas::retnet(heads)?, None))?;
    let mut pool = ret.state_pool(heads, dk, dv, layers, batch)?;
    let slots = (0..batch)
        .map(|_| pool.alloc())
        .collect::<retention::Result<Vec<_>>>()?;
    let stream = Stream::new(&device)?;
    let memory = MemoryPool::on(&device, None)?;
    let ramp = |n: usize| {
        (0..n)
            .map(|i| ((i % 11) as f32 - 5.0) / 8.0)
            .collect::<Vec<_>>()
    };
    let upload = |d: usize| {
        let host = HostTensor::new(vec![batch, heads, d], ramp(batch * heads * d))?;
        DeviceTensor::upload(&memory, &host, &stream)
    };
    let (q, k, v) = (upload(dk)?, upload(dk)?, upload(dv)?);
    let mut o = DeviceTensor::zeros(&memory, &device, DeviceDtype::F32, &[batch, heads, dv])?;

    let before = stream.transfers();
    pool.stage(&slots, Some(&stream))?;
    for layer in 0..layers {
        pool.step_into(layer, (&q, &k, &v), &mut o, Some(&stream))?;
    }
    println!("one step moved {:?}", stream.transfers().since(&before));

    stream.begin_capture()?;
    for layer in 0..layers {
        pool.step_into(layer, (&q, &k, &v), &mut o, Some(&stream))?;
    }
    let step = stream.end_capture()?;
    for _ in 0..3 {
        step.replay()?;
    }
    let out = o.download::<f32>(&stream)?;
    println!(
        "{device}: after 4 steps o[0,0,..4] = {:?}",
        &out.data()[..4]
    );
    Ok(())
}
