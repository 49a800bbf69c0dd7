//! One point of the train suite on a GPU: the chunkwise forward (`Retention::chunkwise_into`)
//! and the chunkwise backward (`Retention::chunkwise_backward_into`) on device tensors, on one
//! stream, timed apart as wall time from enqueue to `Stream::synchronize` (so launch and
//! queueing costs count, as a training step sees them). The GPU backward saves nothing from
//! the forward — it recomputes the chunk states on chip — so the forward here is the plain
//! chunkwise forward. FLOPs are the algorithmic count of [`TrainShape::flops`] (the same as
//! the CPU rows); the GPU kernels' recomputation of states is work they do on top, not
//! counted. Peak bytes are measured: the high-water marks of the memory pool holding the
//! inputs, outputs and gradients, plus the runtime's own pool (kernel workspaces).

use retention_core::{Dtype, Gammas, HostTensor};
use retention_kernels::cpu::CpuElement;
use retention_kernels::reference::RetentionParams;
use retention_runtime::{
    Device, DeviceDtype, DeviceTensor, GradientsInto, MemoryPool, Retention, Stream,
};

use super::point::{CHUNK, TrainRow, TrainShape};
use crate::error::CliError;
use crate::random_tensor::random;
use crate::timing::RepeatPlan;

/// Measure `shape` at `tokens` tokens in dtype `T` (`dtype` its name and runtime dtype) on
/// `device`.
///
/// # Errors
/// Any runtime error: allocation (the device's memory), a (K, V) no kernel serves, launches.
pub fn measure<T: CpuElement>(
    device: &Device,
    shape: &TrainShape,
    tokens: usize,
    (dtype, elem): (&'static str, Dtype),
    plan: RepeatPlan,
) -> Result<TrainRow, CliError> {
    let TrainShape {
        batch: b,
        heads: h,
        dk,
        dv,
        ..
    } = *shape;
    let ret = Retention::new(device, RetentionParams::new(Gammas::retnet(h)?, None))?;
    let mem = MemoryPool::on(device, None)?;
    let stream = Stream::new(device)?;
    let up = |shape: &[usize], seed| -> Result<DeviceTensor, CliError> {
        let host: HostTensor<T> = random(shape, seed)?;
        Ok(DeviceTensor::upload(&mem, &host, &stream)?)
    };
    let (qk, vo) = ([b, tokens, h, dk], [b, tokens, h, dv]);
    let (q, k, v, d_o) = (up(&qk, 1)?, up(&qk, 2)?, up(&vo, 3)?, up(&vo, 4)?);
    let elem = DeviceDtype::from(elem);
    let zeros = |dtype, shape: &[usize]| DeviceTensor::zeros(&mem, device, dtype, shape);
    let (mut o, mut ht) = (zeros(elem, &vo)?, zeros(DeviceDtype::F32, &[b, h, dk, dv])?);
    let (mut dq, mut dk_, mut dv_) = (zeros(elem, &qk)?, zeros(elem, &qk)?, zeros(elem, &vo)?);
    let mut dh0 = zeros(DeviceDtype::F32, &[b, h, dk, dv])?;
    let mut dlog = zeros(DeviceDtype::F32, &[h])?;
    let qkv = (&q, &k, &v);
    let mut forward = || -> Result<(), CliError> {
        ret.chunkwise_into(qkv, None, (&mut o, &mut ht), CHUNK, Some(&stream))?;
        Ok(stream.synchronize()?)
    };
    forward()?;
    let forward = plan.measure(0, &mut forward)?;
    let mut backward = || -> Result<(), CliError> {
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk_,
            dv: &mut dv_,
            dh0: Some(&mut dh0),
            dlog_gamma: Some(&mut dlog),
        };
        ret.chunkwise_backward_into(qkv, None, (&d_o, None), out, (CHUNK, Some(&stream)))?;
        Ok(stream.synchronize()?)
    };
    backward()?;
    let backward = plan.measure(0, &mut backward)?;
    let peak_bytes = (mem.stats().high_water + ret.memory().stats().high_water) as u64;
    let row = TrainRow::new(shape, (tokens, dtype), (forward.median, backward.median));
    Ok(TrainRow { peak_bytes, ..row })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The device path end to end on the emulated device (what `--device cuda` runs), on a
    /// tiny shape: a row whose figures add up and whose peak holds every tensor.
    #[test]
    fn a_device_point_on_the_emulator_adds_up() {
        let device = Device::Emulated(kernel_gen::Arch::Sm80);
        let shape = TrainShape {
            name: "custom",
            batch: 1,
            heads: 2,
            dk: 16,
            dv: 24,
        };
        let plan = RepeatPlan {
            min_runs: 1,
            max_runs: 1,
            budget: Duration::ZERO,
        };
        let row = measure::<f32>(&device, &shape, 80, ("f32", Dtype::F32), plan).unwrap();
        assert!(row.forward_seconds > 0.0 && row.backward_seconds > 0.0);
        assert_eq!(row.seconds, row.forward_seconds + row.backward_seconds);
        let (ff, fb) = shape.flops(80);
        assert_eq!(row.flops, ff + fb);
        assert_eq!(row.saved_state_bytes, 0);
        // q, k, v, dO, o, dq, dk, dv in f32, and the f32 states ht, dh0.
        let tensors = 80 * 2 * (4 * 16 + 4 * 24) * 4 + 2 * 2 * 16 * 24 * 4;
        assert!(row.peak_bytes >= tensors, "{row:?}");
        assert!(row.peak_bytes < 16 * tensors, "{row:?}");
    }
}
