//! [`Retention::parallel_backward`] on a GPU-like device (ARCHITECTURE §7): upload q, k, v
//! and dO, run the four passes of the parallel backward ([`crate::gpu_parallel_backward`]),
//! download dq, dk, dv (input dtype) and sum the d log γ partials per head (f64, then f32).

use retention_core::{HostTensor, Result, RetentionError, validate_scale};
use retention_kernels::cpu::CpuElement;

use crate::device_launch::Ctx;
use crate::gpu_parallel_backward::{self as pb, BackwardRegions};
use crate::kernel_launch::{Executor, Region};
use crate::retention::{Retention, shape_of};
use crate::retention_training::Gradients;
use crate::stream::Stream;
use crate::tensor::{DeviceDtype, DeviceTensor};

impl Retention {
    /// The GPU path of [`Retention::parallel_backward`] on `exec` (log2 γ at `log2`).
    pub(crate) fn parallel_backward_on_device<T: CpuElement>(
        &self,
        (exec, log2): (&Executor, &Region),
        (q, k, v): (&HostTensor<T>, &HostTensor<T>, &HostTensor<T>),
        d_o: &HostTensor<T>,
    ) -> Result<Gradients<T>> {
        let s = shape_of(q, k, v, self.params())?;
        d_o.expect_shape("d_o", &["B", "T", "H", "V"], &s.vo_shape())?;
        let dtype = T::DTYPE.ok_or_else(|| RetentionError::DtypeMismatch {
            tensor: "q".into(),
            expected: "f32, f16 or bf16".into(),
            got: "another element type".into(),
        })?;
        let stream = Stream::default_for(self.device())?;
        let cx = Ctx {
            exec,
            stream: &stream,
            gammas: &self.params().gammas,
            log2_gamma: log2,
            scale: validate_scale(self.params().scale, s.dk)? as f32,
            dtype,
        };
        let plans = pb::plans(&cx, &s)?;
        let (mem, dev) = (self.memory(), self.device());
        let up = |t: &HostTensor<T>| DeviceTensor::upload(mem, t, &stream);
        let (dq_in, dk_in, dv_in, do_in) = (up(q)?, up(k)?, up(v)?, up(d_o)?);
        let out = |shape: &[usize]| DeviceTensor::zeros(mem, dev, DeviceDtype::of::<T>()?, shape);
        let (mut dq, mut dk, mut dv) = (
            out(&s.qk_shape())?,
            out(&s.qk_shape())?,
            out(&s.vo_shape())?,
        );
        let mut partials =
            DeviceTensor::zeros(mem, dev, DeviceDtype::F32, &[pb::partial_count(&plans)])?;
        let regions = BackwardRegions {
            q: Region::of(&dq_in),
            k: Region::of(&dk_in),
            v: Region::of(&dv_in),
            d_o: Region::of(&do_in),
            dq: Region::of_mut(&mut dq),
            dk: Region::of_mut(&mut dk),
            dv: Region::of_mut(&mut dv),
            partials: Region::of_mut(&mut partials),
        };
        pb::launch(&cx, &s, &plans, &regions)?;
        let partials: HostTensor<f32> = partials.download(&stream)?;
        let dlog_gamma = pb::sum_partials(partials.data(), s.heads, s.batch);
        Ok(Gradients {
            dq: dq.download(&stream)?,
            dk: dk.download(&stream)?,
            dv: dv.download(&stream)?,
            dh0: None,
            dlog_gamma: HostTensor::new(vec![s.heads], dlog_gamma)?,
        })
    }
}
