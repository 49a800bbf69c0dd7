//! The parallel backward on device tensors (ARCHITECTURE §7):
//! [`Retention::parallel_backward_into`] writes dq, dk, dv (input dtype) and, when asked, d log
//! γ (f32) into the caller's tensors. On GPU-like devices it runs the four passes of the
//! parallel backward ([`crate::gpu_parallel_backward`]) on the caller's stream and sums the
//! d log γ partials per head on the host (f64, then f32: the op's one host round trip, only
//! when d log γ is asked for); on `Device::Cpu` the CPU kernel runs on host copies.
//! [`Retention::parallel_backward`] on a GPU-like device uploads, calls it and downloads.

use half::{bf16, f16};
use retention_core::{Dtype, HostTensor, Result, RetentionError, RetentionShape};
use retention_kernels::cpu::{self, CpuElement};

use crate::gpu_parallel_backward::{self as pb, BackwardRegions};
use crate::host_view;
use crate::kernel_launch::{Executor, Region};
use crate::retention::{Retention, shape_of};
use crate::retention_device::Qkv;
use crate::retention_training::Gradients;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};
use crate::training_device::GradientsInto;

impl Retention {
    /// Gradients of [`Retention::parallel`] on device tensors for the upstream `d_o`
    /// `[B, T, H, V]`, written to `out` (`out.dh0` must be `None`: the parallel form has no
    /// initial state), enqueued on `stream` (this device's, or its default when `None`).
    /// Asking for `out.dlog_gamma` on a GPU-like device makes the op wait for the stream.
    ///
    /// # Errors
    /// A tensor or stream of another device; dtype or shape mismatches (naming the tensor);
    /// `out.dh0` given; gammas, scale; on a GPU-like device a (K, V) no kernel serves.
    pub fn parallel_backward_into(
        &self,
        qkv: Qkv<'_>,
        d_o: &DeviceTensor,
        out: GradientsInto<'_>,
        stream: Option<&Stream>,
    ) -> Result<()> {
        if out.dh0.is_some() {
            return Err(RetentionError::Unsupported {
                what: "dh0 of the parallel backward".into(),
                value: "an output tensor".into(),
                reason: "the parallel form has no initial state; pass None".into(),
            });
        }
        let (s, dtype) = self.check_qkv(qkv, d_o)?;
        let (dev, dt) = (self.device(), DeviceDtype::from(dtype));
        out.dq.expect("dq", dev, dt, &s.qk_shape())?;
        out.dk.expect("dk", dev, dt, &s.qk_shape())?;
        out.dv.expect("dv", dev, dt, &s.vo_shape())?;
        if let Some(t) = out.dlog_gamma.as_deref() {
            t.expect("dlog_gamma", dev, DeviceDtype::F32, &[s.heads])?;
        }
        let stream = self.stream_for(stream)?;
        let Some((exec, log2)) = self.gpu() else {
            return match dtype {
                Dtype::F32 => cpu_parallel_backward::<f32>(self, qkv, d_o, out),
                Dtype::F16 => cpu_parallel_backward::<f16>(self, qkv, d_o, out),
                Dtype::Bf16 => cpu_parallel_backward::<bf16>(self, qkv, d_o, out),
            };
        };
        self.parallel_backward_launch((exec, &log2), (&s, dtype), (qkv, d_o), out, &stream)
    }

    /// The GPU passes of [`Retention::parallel_backward_into`] on checked tensors.
    fn parallel_backward_launch(
        &self,
        (exec, log2): (&Executor, &Region),
        (s, dtype): (&RetentionShape, Dtype),
        ((q, k, v), d_o): (Qkv<'_>, &DeviceTensor),
        out: GradientsInto<'_>,
        stream: &Stream,
    ) -> Result<()> {
        let cx = self.ctx(exec, stream, log2, dtype, s.dk)?;
        let plans = pb::plans(&cx, s)?;
        let mut partials = match out.dlog_gamma {
            Some(_) => Some(DeviceTensor::zeros(
                self.memory(),
                self.device(),
                DeviceDtype::F32,
                &[pb::partial_count(&plans)],
            )?),
            None => None,
        };
        let regions = BackwardRegions {
            q: Region::of(q),
            k: Region::of(k),
            v: Region::of(v),
            d_o: Region::of(d_o),
            dq: Region::of_mut(out.dq),
            dk: Region::of_mut(out.dk),
            dv: Region::of_mut(out.dv),
            partials: partials.as_mut().map(Region::of_mut),
        };
        pb::launch(&cx, s, &plans, &regions)?;
        let (Some(partials), Some(dlog)) = (partials, out.dlog_gamma) else {
            return Ok(());
        };
        let partials: HostTensor<f32> = partials.download(stream)?;
        let sums = pb::sum_partials(partials.data(), s.heads, s.batch);
        dlog.copy_from_host(&HostTensor::new(vec![s.heads], sums)?, stream)
    }

    /// The GPU path of [`Retention::parallel_backward`] on `exec` (log2 γ at `log2`):
    /// upload, [`Retention::parallel_backward_into`] on the default stream, download.
    pub(crate) fn parallel_backward_on_device<T: CpuElement>(
        &self,
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        d_o: &HostTensor<T>,
    ) -> Result<Gradients<T>> {
        let s = shape_of(q, k, v, self.params())?;
        d_o.expect_shape("d_o", &["B", "T", "H", "V"], &s.vo_shape())?;
        let stream = Stream::default_for(self.device())?;
        let (mem, dev) = (self.memory(), self.device());
        let up = |t: &HostTensor<T>| DeviceTensor::upload(mem, t, &stream);
        let (dq_in, dk_in, dv_in, do_in) = (up(q)?, up(k)?, up(v)?, up(d_o)?);
        let zeros = |dt, shape: &[usize]| DeviceTensor::zeros(mem, dev, dt, shape);
        let dt = DeviceDtype::of::<T>()?;
        let (mut dq, mut dk, mut dv) = (
            zeros(dt, &s.qk_shape())?,
            zeros(dt, &s.qk_shape())?,
            zeros(dt, &s.vo_shape())?,
        );
        let mut dlog = zeros(DeviceDtype::F32, &[s.heads])?;
        let out = GradientsInto {
            dq: &mut dq,
            dk: &mut dk,
            dv: &mut dv,
            dh0: None,
            dlog_gamma: Some(&mut dlog),
        };
        let qkv = (&dq_in, &dk_in, &dv_in);
        self.parallel_backward_into(qkv, &do_in, out, Some(&stream))?;
        Ok(Gradients {
            dq: dq.download(&stream)?,
            dk: dk.download(&stream)?,
            dv: dv.download(&stream)?,
            dh0: None,
            dlog_gamma: dlog.download(&stream)?,
        })
    }
}

/// The CPU form of [`Retention::parallel_backward_into`]: the CPU kernel on host copies of
/// the checked tensors, its results copied into the outputs.
fn cpu_parallel_backward<T: CpuElement>(
    ret: &Retention,
    (q, k, v): Qkv<'_>,
    d_o: &DeviceTensor,
    out: GradientsInto<'_>,
) -> Result<()> {
    let (hq, hk, hv) = (
        host_view::read::<T>(q)?,
        host_view::read::<T>(k)?,
        host_view::read::<T>(v)?,
    );
    let g = cpu::parallel_backward(&hq, &hk, &hv, ret.params(), &host_view::read::<T>(d_o)?)?;
    host_view::write(out.dq, &g.dq)?;
    host_view::write(out.dk, &g.dk)?;
    host_view::write(out.dv, &g.dv)?;
    match out.dlog_gamma {
        Some(t) => host_view::write(t, &g.dlog_gamma),
        None => Ok(()),
    }
}
